package v1alpha1

import (
	"fmt"
	"os"

	"github.com/goccy/go-yaml/ast"

	"kpaas.dev/appliance/api/internal/yamldecode"
)

// Load reads and parses the manifest at path. See Parse.
func Load(path string) (*Bundle, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading bundle manifest: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes a manifest strictly, applies defaults and validates it.
// Unknown fields, duplicate keys, values of the wrong type and every
// Validate rule are reported together in one *ValidationError, each problem
// with its path and line:column in the file; filename is used only in
// messages. The input must hold exactly one YAML document.
func Parse(filename string, data []byte) (*Bundle, error) {
	doc, p := yamldecode.ParseDocument(data, "manifest", Kind)
	if p != nil {
		return nil, &ValidationError{File: filename, Problems: []Problem{*p}}
	}
	d := &decoder{yamldecode.New(doc)}
	b := d.bundle(doc.Body)
	b.Default()
	d.Place(b.validate())
	if ps := d.Problems(); len(ps) > 0 {
		return nil, &ValidationError{File: filename, Problems: ps}
	}
	return b, nil
}

// decoder turns the YAML tree into a Bundle (see api/internal/yamldecode).
type decoder struct{ *yamldecode.Decoder }

type fields = map[string]yamldecode.Field

func (d *decoder) bundle(n ast.Node) *Bundle {
	b := &Bundle{}
	d.Object("", n, fields{
		"apiVersion": d.Str(&b.APIVersion),
		"kind":       d.Str(&b.Kind),
		"metadata": func(path string, n ast.Node) {
			d.Object(path, n, fields{
				"name":        d.Str(&b.Metadata.Name),
				"version":     d.Str(&b.Metadata.Version),
				"description": d.Str(&b.Metadata.Description),
			})
		},
		"platforms": d.Strs(&b.Platforms),
		"kubernetes": func(path string, n ast.Node) {
			d.Object(path, n, fields{"version": d.Str(&b.Kubernetes.Version)})
		},
		"os": func(path string, n ast.Node) {
			b.OS = &OS{}
			d.Object(path, n, fields{"image": d.Str(&b.OS.Image)})
		},
		"images": func(path string, n ast.Node) {
			d.List(path, n, func(path string, n ast.Node) { b.Images = append(b.Images, d.image(path, n)) })
		},
		"charts": func(path string, n ast.Node) {
			d.List(path, n, func(path string, n ast.Node) { b.Charts = append(b.Charts, d.chart(path, n)) })
		},
		"files": func(path string, n ast.Node) {
			d.List(path, n, func(path string, n ast.Node) { b.Files = append(b.Files, d.file(path, n)) })
		},
		"exclude": func(path string, n ast.Node) {
			d.List(path, n, func(path string, n ast.Node) { b.Exclude = append(b.Exclude, d.exclude(path, n)) })
		},
	})
	return b
}

// image decodes an image written as its reference or as a mapping.
func (d *decoder) image(path string, n ast.Node) Image {
	var img Image
	if !d.IsMapping(path, n) {
		img.Ref = d.Scalar(path, n)
		d.Alias(path+".ref", path)
		return img
	}
	d.Object(path, n, fields{
		"ref":       d.Str(&img.Ref),
		"platforms": d.Strs(&img.Platforms),
	})
	return img
}

func (d *decoder) chart(path string, n ast.Node) Chart {
	var c Chart
	d.Object(path, n, fields{
		"name":        d.Str(&c.Name),
		"source":      d.Str(&c.Source),
		"version":     d.Str(&c.Version),
		"release":     d.Str(&c.Release),
		"namespace":   d.Str(&c.Namespace),
		"valuesFiles": d.Strs(&c.ValuesFiles),
		"values": func(path string, n ast.Node) {
			switch v := d.Value(path, n).(type) {
			case nil:
			case map[string]any:
				c.Values = v
			default:
				d.Fail(path, n, "expected a mapping, got %s", yamldecode.Kind(d.Resolve(path, n)))
			}
		},
	})
	return c
}

func (d *decoder) file(path string, n ast.Node) File {
	var f File
	d.Object(path, n, fields{
		"name":    d.Str(&f.Name),
		"version": d.Str(&f.Version),
		"source":  d.Str(&f.Source),
		"sha256":  d.Str(&f.SHA256),
		"mode":    d.Str(&f.Mode),
		"target":  d.Str(&f.Target),
	})
	return f
}

func (d *decoder) exclude(path string, n ast.Node) Exclude {
	var e Exclude
	d.Object(path, n, fields{
		"image":  d.Str(&e.Image),
		"reason": d.Str(&e.Reason),
	})
	return e
}
