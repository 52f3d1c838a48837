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
		"platform": func(path string, n ast.Node) { b.Platform = d.platform(path, n) },
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

func (d *decoder) platform(path string, n ast.Node) *Platform {
	p := &Platform{}
	d.Object(path, n, fields{
		"facts": func(path string, n ast.Node) { p.Facts = d.strMap(path, n) },
		"secrets": func(path string, n ast.Node) {
			d.List(path, n, func(path string, n ast.Node) {
				var s PlatformSecret
				d.Object(path, n, fields{
					"name":        d.Str(&s.Name),
					"namespace":   d.Str(&s.Namespace),
					"type":        d.Str(&s.Type),
					"key":         d.Str(&s.Key),
					"length":      d.Int(&s.Length),
					"htpasswd":    d.Str(&s.Htpasswd),
					"description": d.Str(&s.Description),
				})
				p.Secrets = append(p.Secrets, s)
			})
		},
		"releases": func(path string, n ast.Node) {
			d.List(path, n, func(path string, n ast.Node) { p.Releases = append(p.Releases, d.release(path, n)) })
		},
	})
	return p
}

func (d *decoder) release(path string, n ast.Node) Release {
	var r Release
	d.Object(path, n, fields{
		"name":      d.Str(&r.Name),
		"namespace": d.Str(&r.Namespace),
		"chart":     d.Str(&r.Chart),
		"manifests": d.Strs(&r.Manifests),
		"kustomize": d.Str(&r.Kustomize),
		"values": func(path string, n ast.Node) {
			switch v := d.Value(path, n).(type) {
			case nil:
			case map[string]any:
				r.Values = v
			default:
				d.Fail(path, n, "expected a mapping, got %s", yamldecode.Kind(d.Resolve(path, n)))
			}
		},
		"substitute": func(path string, n ast.Node) { r.Substitute = d.strMap(path, n) },
		"dependsOn":  d.Strs(&r.DependsOn),
		"gate": func(path string, n ast.Node) {
			d.Object(path, n, fields{
				"skip": d.bool(&r.Gate.Skip),
				"conditions": func(path string, n ast.Node) {
					d.List(path, n, func(path string, n ast.Node) {
						var c GateCondition
						d.Object(path, n, fields{
							"object":    d.Str(&c.Object),
							"namespace": d.Str(&c.Namespace),
							"jsonPath":  d.Str(&c.JSONPath),
							"equals":    d.Str(&c.Equals),
							"service":   d.Str(&c.Service),
						})
						r.Gate.Conditions = append(r.Gate.Conditions, c)
					})
				},
			})
		},
		"timeout": d.Str(&r.Timeout),
		"vault":   d.bool(&r.Vault),
		"harbor":  d.bool(&r.Harbor),
		"url":     d.Str(&r.URL),
	})
	return r
}

// strMap decodes a mapping of strings.
func (d *decoder) strMap(path string, n ast.Node) map[string]string {
	if !d.IsMapping(path, n) {
		if d.Value(path, n) != nil {
			d.Fail(path, n, "expected a mapping, got %s", yamldecode.Kind(d.Resolve(path, n)))
		}
		return nil
	}
	m := map[string]string{}
	fs := fields{}
	// Every key is allowed: decode the mapping's values as strings.
	if v, ok := d.Value(path, n).(map[string]any); ok {
		for k := range v {
			fs[k] = func(path string, n ast.Node) { m[k] = d.Scalar(path, n) }
		}
	}
	d.Object(path, n, fs)
	return m
}

// bool decodes true or false.
func (d *decoder) bool(dst *bool) yamldecode.Field {
	return func(path string, n ast.Node) {
		switch v := d.Resolve(path, n).(type) {
		case nil, *ast.NullNode:
		case *ast.BoolNode:
			*dst = v.Value
		default:
			d.Fail(path, v, "expected true or false, got %s", yamldecode.Kind(v))
		}
	}
}
