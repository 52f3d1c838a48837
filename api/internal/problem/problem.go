// Package problem is the validation error of the user-facing schemas under
// api/: every problem of a document at once, each with its field path and,
// when the document was parsed from a file, its position. The versioned
// packages alias these types (v1alpha1.Problem, v1alpha1.ValidationError).
package problem

import (
	"fmt"
	"strings"
)

// Problem is one thing wrong with a document.
type Problem struct {
	// Path locates the offending field, e.g. "charts[2].version";
	// "" means the document as a whole.
	Path string `json:"path"`
	// Line and Column are 1-based positions in the file. They are 0 when
	// the document was not parsed from a file or the schema keeps none.
	Line   int `json:"line"`
	Column int `json:"column"`
	// Message says what is wrong, in lower case, e.g. "required".
	Message string `json:"message"`
}

// String formats p as "line:col: path: message", leaving out what is unknown.
func (p Problem) String() string {
	var b strings.Builder
	if p.Line > 0 {
		fmt.Fprintf(&b, "%d:%d: ", p.Line, p.Column)
	}
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// ValidationError lists every problem found in a document. Callers that
// want the individual problems (for JSON output, say) use errors.As.
type ValidationError struct {
	// File is the document's file name as given to the parser, or "".
	File     string
	Problems []Problem
}

// Error prints one line per problem, each prefixed with the file name:
//
//	bundles/x.yaml:12:5: charts[2].version: required
func (e *ValidationError) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		if e.File != "" {
			b.WriteString(e.File)
			if p.Line > 0 {
				b.WriteByte(':')
			} else {
				b.WriteString(": ")
			}
		}
		b.WriteString(p.String())
	}
	return b.String()
}
