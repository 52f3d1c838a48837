package v1alpha1

import (
	"errors"
	"fmt"
	"math"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// Limits that keep a hostile manifest from exhausting memory or stack.
const (
	maxNodes = 1 << 20 // nodes visited, counting every alias expansion
	maxDepth = 100     // nesting of values
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
	doc, problem := parseYAML(data)
	if problem != nil {
		return nil, &ValidationError{File: filename, Problems: []Problem{*problem}}
	}
	d := &decoder{nodes: map[string]ast.Node{}, anchors: map[string]ast.Node{}, budget: maxNodes}
	ast.Walk(d, doc) // collect anchors
	b := d.bundle(doc.Body)
	b.Default()
	d.place(b.validate())
	if len(d.problems) > 0 {
		sort.SliceStable(d.problems, func(i, j int) bool {
			pi, pj := d.problems[i], d.problems[j]
			return pi.Line < pj.Line || pi.Line == pj.Line && pi.Column < pj.Column
		})
		return nil, &ValidationError{File: filename, Problems: d.problems}
	}
	return b, nil
}

// parseYAML returns the one document in data, or the problem that prevents
// reading it.
func parseYAML(data []byte) (doc *ast.DocumentNode, problem *Problem) {
	defer func() {
		// The YAML parser is third-party code fed untrusted input: a panic in
		// it is one more problem with the manifest, not a crash of the caller.
		if r := recover(); r != nil {
			problem = &Problem{Line: 1, Column: 1, Message: fmt.Sprintf("invalid yaml: parser failed: %v", r)}
		}
	}()
	// Duplicate keys are allowed here so that the decoder reports them
	// together with everything else.
	f, err := parser.ParseBytes(data, 0, parser.AllowDuplicateMapKey())
	if err != nil {
		p := Problem{Line: 1, Column: 1, Message: "invalid yaml: " + err.Error()}
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
		return nil, &Problem{Line: 1, Column: 1, Message: "empty manifest"}
	case len(docs) > 1:
		p := &Problem{Message: "more than one YAML document; a manifest holds one Bundle"}
		p.Line, p.Column = position(docs[1].Body)
		return nil, p
	}
	return docs[0], nil
}

// decoder turns the YAML tree into a Bundle by hand, so that it can check
// every node's type, report every problem with its position, and remember
// where each field was written.
type decoder struct {
	problems []Problem
	nodes    map[string]ast.Node // field path → node, to place Validate's problems
	anchors  map[string]ast.Node
	budget   int
}

// Visit implements ast.Visitor to collect the document's anchors.
func (d *decoder) Visit(n ast.Node) ast.Visitor {
	if a, ok := n.(*ast.AnchorNode); ok && a.Name != nil {
		d.anchors[a.Name.GetToken().Value] = a.Value
	}
	return d
}

func (d *decoder) fail(path string, n ast.Node, format string, args ...any) {
	p := Problem{Path: path, Message: fmt.Sprintf(format, args...)}
	p.Line, p.Column = position(n)
	// A node reached again through an alias is reported once.
	for _, q := range d.problems {
		if q.Line == p.Line && q.Column == p.Column && q.Message == p.Message {
			return
		}
	}
	d.problems = append(d.problems, p)
}

// place gives Validate's problems the position of the node at their path,
// or of its nearest recorded parent for a missing field. A problem at a path
// the decoder already complained about is dropped: it is a consequence.
func (d *decoder) place(ps []Problem) {
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

// parent returns the path one level up: charts[2].version → charts[2] →
// charts → "".
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

// resolve follows anchors, aliases and tags to the node that holds the
// value of the field at path, and records where that field was written.
// It returns nil after reporting a problem.
func (d *decoder) resolve(path string, n ast.Node) ast.Node {
	v := d.follow(path, n)
	if v != nil {
		d.nodes[path] = n
	}
	return v
}

// follow follows anchors, aliases and tags to the node that holds the value.
// It returns nil after reporting a problem.
func (d *decoder) follow(path string, n ast.Node) ast.Node {
	orig := n
	for range maxDepth {
		if d.budget--; d.budget < 0 {
			if d.budget == -1 {
				d.fail(path, orig, "document too large (more than %d nodes after expanding aliases)", maxNodes)
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
				d.fail(path, v, "unknown alias %q", name)
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
				d.fail(path, v, "unsupported tag %s", tag)
				return nil
			}
		case *ast.MappingKeyNode:
			n = v.Value
		default:
			return n
		}
	}
	d.fail(path, orig, "aliases nested too deeply")
	return nil
}

// kind names a node's type for messages.
func kind(n ast.Node) string {
	switch n.(type) {
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
func (d *decoder) entries(path string, n ast.Node) ([]entry, bool) {
	n = d.resolve(path, n)
	switch n.(type) {
	case nil:
		return nil, false
	case *ast.NullNode:
		return nil, true
	case *ast.MappingNode:
	default:
		d.fail(path, n, "expected a mapping, got %s", kind(n))
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
			d.fail(join(path, key), mv.Key, "duplicate key (first at %d:%d)", line, col)
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
func (d *decoder) mergeSources(path string, n ast.Node) []ast.Node {
	if seq, ok := d.follow(path, n).(*ast.SequenceNode); ok {
		return seq.Values
	}
	return []ast.Node{n}
}

// key returns a mapping key as a string. Scalar keys are taken as written
// (1: x has the key "1"); others are reported.
func (d *decoder) key(path string, n ast.Node) (string, bool) {
	switch k := d.follow(path, n).(type) {
	case nil:
		return "", false
	case *ast.StringNode:
		return k.Value, true
	case ast.ScalarNode:
		return k.GetToken().Value, true
	default:
		d.fail(path, n, "mapping keys must be strings, got %s", kind(k))
		return "", false
	}
}

var plainKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// join appends a key to a path: a.b, or a["b.c"] when the key needs quoting.
func join(path, key string) string {
	if !plainKey.MatchString(key) {
		return fmt.Sprintf("%s[%q]", path, key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// field decodes one value of an object at path.
type field func(path string, n ast.Node)

// object decodes the mapping at n into fields, reporting unknown ones.
func (d *decoder) object(path string, n ast.Node, fields map[string]field) {
	es, _ := d.entries(path, n)
	for _, e := range es {
		f, ok := fields[e.key]
		if !ok {
			d.fail(join(path, e.key), e.keyNode, "unknown field")
			continue
		}
		f(join(path, e.key), e.value)
	}
}

// list calls each for the items of the sequence at n. Null is an empty list.
func (d *decoder) list(path string, n ast.Node, each func(path string, n ast.Node)) {
	switch v := d.resolve(path, n).(type) {
	case nil, *ast.NullNode:
	case *ast.SequenceNode:
		for i, item := range v.Values {
			each(index(path, i), item)
		}
	default:
		d.fail(path, v, "expected a list, got %s", kind(v))
	}
}

// scalar returns the string at n; null is "".
func (d *decoder) scalar(path string, n ast.Node) string {
	switch v := d.resolve(path, n).(type) {
	case nil, *ast.NullNode:
		return ""
	case *ast.StringNode:
		return v.Value
	case *ast.LiteralNode:
		return v.Value.Value
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.InfinityNode, *ast.NanNode:
		text := v.GetToken().Value
		d.fail(path, v, "expected a string, got %s (quote it: %q)", kind(v), text)
		return ""
	default:
		d.fail(path, v, "expected a string, got %s", kind(v))
		return ""
	}
}

func (d *decoder) str(dst *string) field {
	return func(path string, n ast.Node) { *dst = d.scalar(path, n) }
}

func (d *decoder) strs(dst *[]string) field {
	return func(path string, n ast.Node) {
		d.list(path, n, func(path string, n ast.Node) {
			*dst = append(*dst, d.scalar(path, n))
		})
	}
}

func (d *decoder) bundle(n ast.Node) *Bundle {
	b := &Bundle{}
	d.object("", n, map[string]field{
		"apiVersion": d.str(&b.APIVersion),
		"kind":       d.str(&b.Kind),
		"metadata": func(path string, n ast.Node) {
			d.object(path, n, map[string]field{
				"name":        d.str(&b.Metadata.Name),
				"version":     d.str(&b.Metadata.Version),
				"description": d.str(&b.Metadata.Description),
			})
		},
		"platforms": d.strs(&b.Platforms),
		"kubernetes": func(path string, n ast.Node) {
			d.object(path, n, map[string]field{"version": d.str(&b.Kubernetes.Version)})
		},
		"os": func(path string, n ast.Node) {
			b.OS = &OS{}
			d.object(path, n, map[string]field{"image": d.str(&b.OS.Image)})
		},
		"images": func(path string, n ast.Node) {
			d.list(path, n, func(path string, n ast.Node) { b.Images = append(b.Images, d.image(path, n)) })
		},
		"charts": func(path string, n ast.Node) {
			d.list(path, n, func(path string, n ast.Node) { b.Charts = append(b.Charts, d.chart(path, n)) })
		},
		"files": func(path string, n ast.Node) {
			d.list(path, n, func(path string, n ast.Node) { b.Files = append(b.Files, d.file(path, n)) })
		},
		"exclude": func(path string, n ast.Node) {
			d.list(path, n, func(path string, n ast.Node) { b.Exclude = append(b.Exclude, d.exclude(path, n)) })
		},
	})
	return b
}

// image decodes an image written as its reference or as a mapping.
func (d *decoder) image(path string, n ast.Node) Image {
	var img Image
	if _, ok := d.resolve(path, n).(*ast.MappingNode); !ok {
		img.Ref = d.scalar(path, n)
		d.nodes[path+".ref"] = d.nodes[path]
		return img
	}
	d.object(path, n, map[string]field{
		"ref":       d.str(&img.Ref),
		"platforms": d.strs(&img.Platforms),
	})
	return img
}

func (d *decoder) chart(path string, n ast.Node) Chart {
	var c Chart
	d.object(path, n, map[string]field{
		"name":        d.str(&c.Name),
		"source":      d.str(&c.Source),
		"version":     d.str(&c.Version),
		"release":     d.str(&c.Release),
		"namespace":   d.str(&c.Namespace),
		"valuesFiles": d.strs(&c.ValuesFiles),
		"values": func(path string, n ast.Node) {
			switch v := d.value(path, n, 0).(type) {
			case nil:
			case map[string]any:
				c.Values = v
			default:
				d.fail(path, n, "expected a mapping, got %s", kind(d.follow(path, n)))
			}
		},
	})
	return c
}

func (d *decoder) file(path string, n ast.Node) File {
	var f File
	d.object(path, n, map[string]field{
		"name":    d.str(&f.Name),
		"version": d.str(&f.Version),
		"source":  d.str(&f.Source),
		"sha256":  d.str(&f.SHA256),
		"mode":    d.str(&f.Mode),
		"target":  d.str(&f.Target),
	})
	return f
}

func (d *decoder) exclude(path string, n ast.Node) Exclude {
	var e Exclude
	d.object(path, n, map[string]field{
		"image":  d.str(&e.Image),
		"reason": d.str(&e.Reason),
	})
	return e
}

// value decodes free-form YAML into JSON-compatible Go values:
// map[string]any, []any, string, int64 (uint64 beyond its range), float64,
// bool and nil.
func (d *decoder) value(path string, n ast.Node, depth int) any {
	if depth > maxDepth {
		d.fail(path, n, "nested more than %d levels deep", maxDepth)
		return nil
	}
	switch v := d.resolve(path, n).(type) {
	case nil, *ast.NullNode:
		return nil
	case *ast.MappingNode:
		es, _ := d.entries(path, v)
		m := make(map[string]any, len(es))
		for _, e := range es {
			m[e.key] = d.value(join(path, e.key), e.value, depth+1)
		}
		return m
	case *ast.SequenceNode:
		s := make([]any, 0, len(v.Values))
		for i, item := range v.Values {
			s = append(s, d.value(index(path, i), item, depth+1))
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
			d.fail(path, v, "%s cannot be represented in JSON", v.GetToken().Value)
			return nil
		}
		return v.Value
	case *ast.InfinityNode, *ast.NanNode:
		d.fail(path, v, "%s cannot be represented in JSON", v.GetToken().Value)
		return nil
	default:
		d.fail(path, v, "%s cannot be represented in JSON", kind(v))
		return nil
	}
}
