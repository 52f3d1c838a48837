package v1alpha1

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/goccy/go-yaml"
)

// Load reads and parses the definition at path. See Parse.
func Load(path string) (*OSImage, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading OS image definition: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes a definition strictly (unknown fields, duplicate keys and
// values of the wrong type are errors), applies defaults and validates it.
// Every problem is reported in one *ValidationError; filename is used only
// in messages.
func Parse(filename string, data []byte) (o *OSImage, err error) {
	defer func() {
		// A panic in the third-party parser is a bad definition, not a crash.
		if r := recover(); r != nil {
			o, err = nil, &ValidationError{File: filename, Problems: []Problem{{Message: fmt.Sprintf("invalid yaml: parser failed: %v", r)}}}
		}
	}()
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, &ValidationError{File: filename, Problems: []Problem{{Message: "empty definition"}}}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data), yaml.DisallowUnknownField(), yaml.Strict())
	o = &OSImage{}
	if err := dec.Decode(o); err != nil {
		return nil, &ValidationError{File: filename, Problems: []Problem{{Message: "invalid yaml: " + yamlMessage(err)}}}
	}
	var extra any
	if err := dec.Decode(&extra); err == nil {
		return nil, &ValidationError{File: filename, Problems: []Problem{{Message: "more than one YAML document; a definition holds one OSImage"}}}
	}
	o.Default()
	if ps := o.validate(); len(ps) > 0 {
		return nil, &ValidationError{File: filename, Problems: ps}
	}
	return o, nil
}

// yamlMessage formats a decoder error on one line with its position.
func yamlMessage(err error) string {
	var yerr yaml.Error
	if errors.As(err, &yerr) {
		msg := yerr.GetMessage()
		if tk := yerr.GetToken(); tk != nil && tk.Position != nil {
			return fmt.Sprintf("%d:%d: %s", tk.Position.Line, tk.Position.Column, msg)
		}
		return msg
	}
	return err.Error()
}
