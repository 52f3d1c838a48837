package v1alpha1

import (
	"fmt"
	"os"

	"github.com/goccy/go-yaml/ast"

	"kpaas.dev/appliance/api/internal/yamldecode"
)

// ParseFile reads and parses the cluster configuration at path. See Parse.
func ParseFile(path string) (*Cluster, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading cluster configuration: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes a cluster configuration strictly, applies defaults and
// validates it. Unknown fields, duplicate keys, values of the wrong type
// and every Validate rule are reported together in one *ValidationError,
// each problem with its field path and line:column in the file; file is
// used only in messages. The input must hold exactly one YAML document.
func Parse(file string, data []byte) (*Cluster, error) {
	doc, p := yamldecode.ParseDocument(data, "cluster configuration", Kind)
	if p != nil {
		return nil, &ValidationError{File: file, Problems: []Problem{*p}}
	}
	d := yamldecode.New(doc)
	c := decode(d, doc.Body)
	c.Default()
	d.Place(c.validate())
	if ps := d.Problems(); len(ps) > 0 {
		return nil, &ValidationError{File: file, Problems: ps}
	}
	return c, nil
}

func decode(d *yamldecode.Decoder, n ast.Node) *Cluster {
	c := &Cluster{}
	d.Object("", n, map[string]yamldecode.Field{
		"apiVersion": d.Str(&c.APIVersion),
		"kind":       d.Str(&c.Kind),
		"metadata": func(path string, n ast.Node) {
			d.Object(path, n, map[string]yamldecode.Field{"name": d.Str(&c.Metadata.Name)})
		},
		"controlPlaneEndpoint": func(path string, n ast.Node) {
			d.Object(path, n, map[string]yamldecode.Field{
				"host": d.Str(&c.ControlPlaneEndpoint.Host),
				"port": d.Int(&c.ControlPlaneEndpoint.Port),
			})
		},
		"networking": func(path string, n ast.Node) {
			w := &c.Networking
			d.Object(path, n, map[string]yamldecode.Field{
				"podCIDR":     d.Str(&w.PodCIDR),
				"serviceCIDR": d.Str(&w.ServiceCIDR),
				"dnsDomain":   d.Str(&w.DNSDomain),
				"proxyMode":   d.Str(&w.ProxyMode),
			})
		},
		"seed": func(path string, n ast.Node) {
			d.Object(path, n, map[string]yamldecode.Field{"port": d.Int(&c.Seed.Port)})
		},
		"nodes": func(path string, n ast.Node) {
			d.List(path, n, func(path string, n ast.Node) {
				var node Node
				d.Object(path, n, map[string]yamldecode.Field{
					"name":           d.Str(&node.Name),
					"role":           d.Str(&node.Role),
					"macs":           d.Strs(&node.MACs),
					"managementMACs": d.Strs(&node.ManagementMACs),
					"address":        d.Str(&node.Address),
					"gateway":        d.Str(&node.Gateway),
					"dns":            d.Strs(&node.DNS),
					"ntp":            d.Strs(&node.NTP),
				})
				c.Nodes = append(c.Nodes, node)
			})
		},
		"platform": func(path string, n ast.Node) {
			c.Platform = &Platform{}
			d.Object(path, n, map[string]yamldecode.Field{
				"storage":   d.Str(&c.Platform.Storage),
				"nfsServer": d.Str(&c.Platform.NFSServer),
				"disable":   d.Strs(&c.Platform.Disable),
			})
		},
	})
	return c
}
