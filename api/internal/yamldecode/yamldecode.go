// Package yamldecode decodes a YAML document into a schema's Go types by
// hand, walking goccy/go-yaml's AST, so that every problem is reported at
// once with its field path and line:column: unknown fields, duplicate keys,
// values of the wrong type, and (through Place) the problems a schema's
// Validate finds afterwards. Anchors, aliases and merge keys are followed
// within a budget that keeps a hostile document from exhausting memory.
//
// A schema's Parse is: ParseDocument, New, one object(…) call per type
// with a field map, Default, Place(validate()), Problems.
package yamldecode

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"

	"kpaas.dev/appliance/api/internal/problem"
)

// Limits that keep a hostile document from exhausting memory or stack.
const (
	MaxNodes = 1 << 20 // nodes visited, counting every alias expansion
	MaxDepth = 100     // nesting of values
)

// ParseDocument returns the one document in data, or the problem that
// prevents reading it. what names the document in messages ("manifest",
// "cluster configuration"), kind its kind ("Bundle", "Cluster").
func ParseDocument(data []byte, what, kind string) (doc *ast.DocumentNode, p *problem.Problem) {
	defer func() {
		// The YAML parser is third-party code fed untrusted input: a panic in
		// it is one more problem with the document, not a crash of the caller.
		if r := recover(); r != nil {
			p = &problem.Problem{Line: 1, Column: 1, Message: fmt.Sprintf("invalid yaml: parser failed: %v", r)}
		}
	}()
	// Duplicate keys are allowed here so that the decoder reports them
	// together with everything else.
	f, err := parser.ParseBytes(data, 0, parser.AllowDuplicateMapKey())
	if err != nil {
		p := problem.Problem{Line: 1, Column: 1, Message: "invalid yaml: " + err.Error()}
		var yerr yaml.Error
		if errors.As(err, &yerr) {
			p.Message = "invalid yaml: " + yerr.GetMessage()
			if tk := yerr.GetToken(); tk != nil && tk.Position != nil {
				p.Line, p.Column = tk.Position.Line, tk.Position.Column
			}
		}
		return nil, &p
	}
	var docs []*ast.DocumentNode
	for _, d := range f.Docs {
		if d.Body != nil {
			docs = append(docs, d)
		}
	}
	switch {
	case len(docs) == 0:
		return nil, &problem.Problem{Line: 1, Column: 1, Message: "empty " + what}
	case len(docs) > 1:
		p := &problem.Problem{Message: fmt.Sprintf("more than one YAML document; a %s holds one %s", what, kind)}
		p.Line, p.Column = position(docs[1].Body)
		return nil, p
	}
	return docs[0], nil
}

// Decoder turns a YAML tree into Go values, collecting problems and
// remembering where each field was written. Its methods report a problem
// and return a zero value rather than fail.
type Decoder struct {
	problems []problem.Problem
	nodes    map[string]ast.Node // field path → node, to place Validate's problems
	anchors  map[string]ast.Node
	budget   int
}

// New returns a decoder for doc, its anchors collected.
func New(doc *ast.DocumentNode) *Decoder {
	d := &Decoder{nodes: map[string]ast.Node{}, anchors: map[string]ast.Node{}, budget: MaxNodes}
	ast.Walk(d, doc)
	return d
}

// Visit implements ast.Visitor to collect the document's anchors.
func (d *Decoder) Visit(n ast.Node) ast.Visitor {
	if a, ok := n.(*ast.AnchorNode); ok && a.Name != nil {
		d.anchors[a.Name.GetToken().Value] = a.Value
	}
	return d
}

// Problems returns the problems found so far, in file order.
func (d *Decoder) Problems() []problem.Problem {
	sort.SliceStable(d.problems, func(i, j int) bool {
		pi, pj := d.problems[i], d.problems[j]
		return pi.Line < pj.Line || pi.Line == pj.Line && pi.Column < pj.Column
	})
	return d.problems
}

// Fail reports a problem with the value at path, written at n.
func (d *Decoder) Fail(path string, n ast.Node, format string, args ...any) {
	p := problem.Problem{Path: path, Message: fmt.Sprintf(format, args...)}
	p.Line, p.Column = position(n)
	// A node reached again through an alias is reported once.
	for _, q := range d.problems {
		if q.Line == p.Line && q.Column == p.Column && q.Message == p.Message {
			return
		}
	}
	d.problems = append(d.problems, p)
}

// Place gives Validate's problems the position of the node at their path,
// or of its nearest recorded parent for a missing field. A problem at a path
// the decoder already complained about is dropped: it is a consequence.
func (d *Decoder) Place(ps []problem.Problem) {
	failed := map[string]bool{}
	for _, p := range d.problems {
		failed[p.Path] = true
	}
	consequence := func(path string) bool {
		for ; ; path = parent(path) {
			if failed[path] {
				return true
			}
			if path == "" {
				return false
			}
		}
	}
	for _, p := range ps {
		if consequence(p.Path) {
			continue
		}
		for at := p.Path; ; at = parent(at) {
			if n, ok := d.nodes[at]; ok {
				p.Line, p.Column = position(n)
				break
			}
			if at == "" {
				break
			}
		}
		d.problems = append(d.problems, p)
	}
}

// parent returns the path one level up: nodes[2].macs[0] → nodes[2].macs →
// nodes[2] → nodes → "".
func parent(path string) string {
	if strings.HasSuffix(path, "]") {
		return path[:strings.LastIndexByte(path, '[')]
	}
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return ""
}

func position(n ast.Node) (line, column int) {
	if n == nil {
		return 0, 0
	}
	// A block mapping's own token is not where it starts: its first key is.
	if m, ok := n.(*ast.MappingNode); ok && len(m.Values) > 0 {
		n = m.Values[0].Key
	}
	if tk := n.GetToken(); tk != nil && tk.Position != nil {
		return tk.Position.Line, tk.Position.Column
	}
	return 0, 0
}

// Resolve follows anchors, aliases and tags to the node that holds the
// value of the field at path, and records where that field was written.
// It returns nil after reporting a problem.
func (d *Decoder) Resolve(path string, n ast.Node) ast.Node {
	v := d.follow(path, n)
	if v != nil {
		d.nodes[path] = n
	}
	return v
}

// Alias records that the field at path was written where from was: a
// value given in short form stands for a field of its long form.
func (d *Decoder) Alias(path, from string) { d.nodes[path] = d.nodes[from] }

// follow follows anchors, aliases and tags to the node that holds the value.
// It returns nil after reporting a problem.
func (d *Decoder) follow(path string, n ast.Node) ast.Node {
	orig := n
	for range MaxDepth {
		if d.budget--; d.budget < 0 {
			if d.budget == -1 {
				d.Fail(path, orig, "document too large (more than %d nodes after expanding aliases)", MaxNodes)
			}
			return nil
		}
		switch v := n.(type) {
		case *ast.AnchorNode:
			n = v.Value
		case *ast.AliasNode:
			name := v.Value.GetToken().Value
			target, ok := d.anchors[name]
			if !ok {
				d.Fail(path, v, "unknown alias %q", name)
				return nil
			}
			n = target
		case *ast.TagNode:
			switch tag := v.Start.Value; tag {
			case "!!str":
				if s, ok := v.Value.(ast.ScalarNode); ok {
					n = ast.String(s.GetToken())
				} else {
					n = v.Value
				}
			case "!!map", "!!seq", "!!int", "!!float", "!!bool", "!!null":
				n = v.Value
			default:
				d.Fail(path, v, "unsupported tag %s", tag)
				return nil
			}
		case *ast.MappingKeyNode:
			n = v.Value
		default:
			return n
		}
	}
	d.Fail(path, orig, "aliases nested too deeply")
	return nil
}

// Kind names a node's type for messages.
func Kind(n ast.Node) string {
	switch n.(type) {
	case nil:
		return "nothing"
	case *ast.MappingNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	case *ast.StringNode, *ast.LiteralNode:
		return "a string"
	case *ast.IntegerNode, *ast.FloatNode, *ast.InfinityNode, *ast.NanNode:
		return "a number"
	case *ast.BoolNode:
		return "a boolean"
	case *ast.NullNode:
		return "null"
	}
	return n.Type().String()
}

// entry is one key: value pair of a mapping, merge keys expanded.
type entry struct {
	key     string
	keyNode ast.Node
	value   ast.Node
}

// entries returns the pairs of the mapping at n, or reports that n is not a
// mapping. Null counts as an empty mapping. Duplicate keys are reported; keys
// from a merge (<<) yield to explicit ones.
func (d *Decoder) entries(path string, n ast.Node) ([]entry, bool) {
	n = d.Resolve(path, n)
	switch n.(type) {
	case nil:
		return nil, false
	case *ast.NullNode:
		return nil, true
	case *ast.MappingNode:
	default:
		d.Fail(path, n, "expected a mapping, got %s", Kind(n))
		return nil, false
	}
	var explicit, merged []entry
	first := map[string]ast.Node{}
	for _, mv := range n.(*ast.MappingNode).Values {
		if _, ok := mv.Key.(*ast.MergeKeyNode); ok {
			for _, src := range d.mergeSources(path, mv.Value) {
				es, _ := d.entries(path, src)
				merged = append(merged, es...)
			}
			continue
		}
		key, ok := d.key(path, mv.Key)
		if !ok {
			continue
		}
		if prev, dup := first[key]; dup {
			line, col := position(prev)
			d.Fail(Join(path, key), mv.Key, "duplicate key (first at %d:%d)", line, col)
			continue
		}
		first[key] = mv.Key
		explicit = append(explicit, entry{key, mv.Key, mv.Value})
	}
	for _, e := range merged {
		if _, ok := first[e.key]; !ok {
			first[e.key] = e.keyNode
			explicit = append(explicit, e)
		}
	}
	return explicit, true
}

// mergeSources returns the mappings a merge key's value names: one, or a
// list of them.
func (d *Decoder) mergeSources(path string, n ast.Node) []ast.Node {
	if seq, ok := d.follow(path, n).(*ast.SequenceNode); ok {
		return seq.Values
	}
	return []ast.Node{n}
}

// key returns a mapping key as a string. Scalar keys are taken as written
// (1: x has the key "1"); others are reported.
func (d *Decoder) key(path string, n ast.Node) (string, bool) {
	switch k := d.follow(path, n).(type) {
	case nil:
		return "", false
	case *ast.StringNode:
		return k.Value, true
	case ast.ScalarNode:
		return k.GetToken().Value, true
	default:
		d.Fail(path, n, "mapping keys must be strings, got %s", Kind(k))
		return "", false
	}
}

var bigInt = regexp.MustCompile(`^[-+]?[0-9]+$`)

var plainKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Join appends a key to a path: a.b, or a["b.c"] when the key needs quoting.
func Join(path, key string) string {
	if !plainKey.MatchString(key) {
		return fmt.Sprintf("%s[%q]", path, key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

// Index appends a list index to a path: a[2].
func Index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// Field decodes one value of an object at path.
type Field func(path string, n ast.Node)

// Object decodes the mapping at n into fields, reporting unknown ones.
func (d *Decoder) Object(path string, n ast.Node, fields map[string]Field) {
	es, _ := d.entries(path, n)
	for _, e := range es {
		f, ok := fields[e.key]
		if !ok {
			d.Fail(Join(path, e.key), e.keyNode, "unknown field")
			continue
		}
		f(Join(path, e.key), e.value)
	}
}

// IsMapping tells whether the value at n is a mapping (after aliases).
func (d *Decoder) IsMapping(path string, n ast.Node) bool {
	_, ok := d.Resolve(path, n).(*ast.MappingNode)
	return ok
}

// List calls each for the items of the sequence at n. Null is an empty list.
func (d *Decoder) List(path string, n ast.Node, each func(path string, n ast.Node)) {
	switch v := d.Resolve(path, n).(type) {
	case nil, *ast.NullNode:
	case *ast.SequenceNode:
		for i, item := range v.Values {
			each(Index(path, i), item)
		}
	default:
		d.Fail(path, v, "expected a list, got %s", Kind(v))
	}
}

// Scalar returns the string at n; null is "".
func (d *Decoder) Scalar(path string, n ast.Node) string {
	switch v := d.Resolve(path, n).(type) {
	case nil, *ast.NullNode:
		return ""
	case *ast.StringNode:
		return v.Value
	case *ast.LiteralNode:
		return v.Value.Value
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.InfinityNode, *ast.NanNode:
		text := v.GetToken().Value
		d.Fail(path, v, "expected a string, got %s (quote it: %q)", Kind(v), text)
		return ""
	default:
		d.Fail(path, v, "expected a string, got %s", Kind(v))
		return ""
	}
}

// Str decodes a string field into dst.
func (d *Decoder) Str(dst *string) Field {
	return func(path string, n ast.Node) { *dst = d.Scalar(path, n) }
}

// Strs decodes a list of strings into dst.
func (d *Decoder) Strs(dst *[]string) Field {
	return func(path string, n ast.Node) {
		d.List(path, n, func(path string, n ast.Node) {
			*dst = append(*dst, d.Scalar(path, n))
		})
	}
}

// Int decodes an integer field into dst; null leaves it 0. Values beyond
// ±2³¹ are reported, so that no schema sees an overflowed int.
func (d *Decoder) Int(dst *int) Field {
	return func(path string, n ast.Node) {
		switch v := d.Resolve(path, n).(type) {
		case nil, *ast.NullNode:
		case *ast.IntegerNode:
			var i int64
			switch x := v.Value.(type) {
			case int64:
				i = x
			case uint64:
				i = math.MaxInt64
				if x <= math.MaxInt64 {
					i = int64(x)
				}
			}
			if i > math.MaxInt32 || i < math.MinInt32 {
				d.Fail(path, v, "%s is out of range", v.GetToken().Value)
				return
			}
			*dst = int(i)
		case *ast.StringNode:
			// The YAML parser leaves integers beyond 64 bits plain strings.
			if tk := v.GetToken(); tk.Type == token.StringType && bigInt.MatchString(v.Value) {
				d.Fail(path, v, "%s is out of range", v.Value)
				return
			}
			d.Fail(path, v, "expected an integer, got %s", Kind(v))
		default:
			d.Fail(path, v, "expected an integer, got %s", Kind(v))
		}
	}
}

// Value decodes free-form YAML (chart values, say) into JSON-compatible Go
// values: map[string]any, []any, string, int64 (uint64 beyond its range),
// float64, bool and nil.
func (d *Decoder) Value(path string, n ast.Node) any { return d.value(path, n, 0) }

func (d *Decoder) value(path string, n ast.Node, depth int) any {
	if depth > MaxDepth {
		d.Fail(path, n, "nested more than %d levels deep", MaxDepth)
		return nil
	}
	switch v := d.Resolve(path, n).(type) {
	case nil, *ast.NullNode:
		return nil
	case *ast.MappingNode:
		es, _ := d.entries(path, v)
		m := make(map[string]any, len(es))
		for _, e := range es {
			m[e.key] = d.value(Join(path, e.key), e.value, depth+1)
		}
		return m
	case *ast.SequenceNode:
		s := make([]any, 0, len(v.Values))
		for i, item := range v.Values {
			s = append(s, d.value(Index(path, i), item, depth+1))
		}
		return s
	case *ast.StringNode:
		return v.Value
	case *ast.LiteralNode:
		return v.Value.Value
	case *ast.BoolNode:
		return v.Value
	case *ast.IntegerNode:
		if u, ok := v.Value.(uint64); ok && u <= math.MaxInt64 {
			return int64(u)
		}
		return v.Value
	case *ast.FloatNode:
		if math.IsInf(v.Value, 0) || math.IsNaN(v.Value) {
			d.Fail(path, v, "%s cannot be represented in JSON", v.GetToken().Value)
			return nil
		}
		return v.Value
	case *ast.InfinityNode, *ast.NanNode:
		d.Fail(path, v, "%s cannot be represented in JSON", v.GetToken().Value)
		return nil
	default:
		d.Fail(path, v, "%s cannot be represented in JSON", Kind(v))
		return nil
	}
}
