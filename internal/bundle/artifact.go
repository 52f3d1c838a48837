package bundle

import (
	"bytes"
	"encoding/json"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Media types of the artifacts that are not container images.
const (
	// Helm's own OCI media types, so `helm pull oci://…` works against the
	// registry seed and Harbor stores charts as OCI artifacts.
	ChartConfigMediaType = "application/vnd.cncf.helm.config.v1+json"
	ChartLayerMediaType  = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"

	// A host file: an artifact manifest with one layer, the file's bytes.
	FileArtifactType   = "application/vnd.kpaas.file.v1"
	FileLayerMediaType = "application/octet-stream"
	EmptyMediaType     = "application/vnd.oci.empty.v1+json"

	// AnnotationTitle names a layer's file (OCI standard annotation).
	AnnotationTitle   = "org.opencontainers.image.title"
	AnnotationVersion = "org.opencontainers.image.version"
	// AnnotationFileMode is the octal mode of a host file, e.g. "0755".
	AnnotationFileMode = "dev.kpaas.file.mode"
	// AnnotationFileTarget is where the agent installs a host file.
	AnnotationFileTarget = "dev.kpaas.file.target"
)

// EmptyJSON is the OCI empty descriptor's content, "{}".
var EmptyJSON = []byte("{}")

// artifactManifest is an OCI image manifest with the fields ggcr's
// v1.Manifest lacks (artifactType).
type artifactManifest struct {
	SchemaVersion int64             `json:"schemaVersion"`
	MediaType     types.MediaType   `json:"mediaType"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        v1.Descriptor     `json:"config"`
	Layers        []v1.Descriptor   `json:"layers"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// ChartManifest is the Helm OCI manifest of a chart: config = the chart's
// metadata as JSON, one layer = the chart's .tgz. No timestamp is
// recorded, so the same chart gives the same digest.
func ChartManifest(config, layer v1.Descriptor, name, version string) ([]byte, error) {
	config.MediaType = ChartConfigMediaType
	layer.MediaType = ChartLayerMediaType
	return json.Marshal(artifactManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        config,
		Layers:        []v1.Descriptor{layer},
		Annotations: map[string]string{
			AnnotationTitle:   name,
			AnnotationVersion: version,
		},
	})
}

// FileManifest is the artifact manifest of a host file.
func FileManifest(layer v1.Descriptor, name, version, mode, target string) ([]byte, error) {
	emptyDigest, size, _ := v1.SHA256(bytesReader(EmptyJSON))
	layer.MediaType = FileLayerMediaType
	layer.Annotations = map[string]string{AnnotationTitle: name}
	a := map[string]string{AnnotationTitle: name, AnnotationVersion: version, AnnotationFileMode: mode}
	if target != "" {
		a[AnnotationFileTarget] = target
	}
	return json.Marshal(artifactManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  FileArtifactType,
		Config:        v1.Descriptor{MediaType: EmptyMediaType, Digest: emptyDigest, Size: size},
		Layers:        []v1.Descriptor{layer},
		Annotations:   a,
	})
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
