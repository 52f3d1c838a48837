package v1alpha1_test

import (
	"errors"
	"fmt"

	"kpaas.dev/appliance/api/bundle/v1alpha1"
)

func ExampleParse() {
	manifest := []byte(`apiVersion: kpaas.dev/v1alpha1
kind: Bundle
metadata:
  name: demo
  version: 1.0.0
kubernetes:
  version: v1.35.4
images:
  - registry.k8s.io/pause:3.10
  - ref: quay.io/calico/node:v3.29.0
    platforms: [linux/amd64, linux/arm64]
charts:
  - name: vault
    source: https://helm.releases.hashicorp.com
    version: 0.22.0
    values:
      server: {standalone: {enabled: true}}
`)
	b, err := v1alpha1.Parse("demo.yaml", manifest)
	if err != nil {
		fmt.Println(err)
		return
	}
	c := b.Charts[0]
	fmt.Println(b.Platforms, len(b.Images), c.Release, c.Namespace)
	// Output: [linux/amd64] 2 vault vault
}

func ExampleValidationError() {
	manifest := []byte(`apiVersion: kpaas.dev/v1alpha1
kind: Bundle
metadata:
  name: demo
kubernetes:
  version: v1.35.4
charts:
  - name: vault
    source: https://helm.releases.hashicorp.com
    vesion: 0.22.0
`)
	_, err := v1alpha1.Parse("demo.yaml", manifest)
	fmt.Println(err)
	var verr *v1alpha1.ValidationError
	if errors.As(err, &verr) {
		fmt.Println(len(verr.Problems), "problems")
	}
	// Output:
	// demo.yaml:4:3: metadata.version: required
	// demo.yaml:8:5: charts[0].version: required
	// demo.yaml:10:5: charts[0].vesion: unknown field
	// 3 problems
}
