package bundle

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// SPDX document constants.
const (
	SPDXVersion     = "SPDX-2.3"
	spdxDataLicense = "CC0-1.0"
	spdxNoAssert    = "NOASSERTION"
	// SBOMNamespacePrefix starts every documentNamespace.
	SBOMNamespacePrefix = "https://kpaas.dev/spdx/"
)

// SPDXDocument is the subset of an SPDX 2.3 JSON document the bundle
// writes. Field order is the output order.
type SPDXDocument struct {
	SPDXVersion       string             `json:"spdxVersion"`
	DataLicense       string             `json:"dataLicense"`
	SPDXID            string             `json:"SPDXID"`
	Name              string             `json:"name"`
	DocumentNamespace string             `json:"documentNamespace"`
	CreationInfo      SPDXCreationInfo   `json:"creationInfo"`
	Packages          []SPDXPackage      `json:"packages"`
	Relationships     []SPDXRelationship `json:"relationships"`
}

// SPDXCreationInfo says who made the document and when.
type SPDXCreationInfo struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
	Comment  string   `json:"comment,omitempty"`
}

// SPDXPackage is one artifact of the bundle.
type SPDXPackage struct {
	SPDXID                string            `json:"SPDXID"`
	Name                  string            `json:"name"`
	VersionInfo           string            `json:"versionInfo,omitempty"`
	DownloadLocation      string            `json:"downloadLocation"`
	FilesAnalyzed         bool              `json:"filesAnalyzed"`
	Checksums             []SPDXChecksum    `json:"checksums,omitempty"`
	LicenseConcluded      string            `json:"licenseConcluded"`
	LicenseDeclared       string            `json:"licenseDeclared"`
	CopyrightText         string            `json:"copyrightText"`
	ExternalRefs          []SPDXExternalRef `json:"externalRefs,omitempty"`
	PrimaryPackagePurpose string            `json:"primaryPackagePurpose,omitempty"`
	SourceInfo            string            `json:"sourceInfo,omitempty"`
	Comment               string            `json:"comment,omitempty"`
}

// SPDXChecksum is a package checksum.
type SPDXChecksum struct {
	Algorithm     string `json:"algorithm"`
	ChecksumValue string `json:"checksumValue"`
}

// SPDXExternalRef is a package's external reference (a purl here).
type SPDXExternalRef struct {
	ReferenceCategory string `json:"referenceCategory"`
	ReferenceType     string `json:"referenceType"`
	ReferenceLocator  string `json:"referenceLocator"`
}

// SPDXRelationship relates two SPDX elements.
type SPDXRelationship struct {
	SPDXElementID      string `json:"spdxElementId"`
	RelationshipType   string `json:"relationshipType"`
	RelatedSPDXElement string `json:"relatedSpdxElement"`
}

// SBOMOption configures WriteSBOM.
type SBOMOption func(*sbomOptions)

type sbomOptions struct {
	created time.Time
	set     bool
}

// WithCreated sets the document's creation time (otherwise it is
// 1970-01-01T00:00:00Z). The package does not read the environment: `kpaas
// bake` passes SOURCE_DATE_EPOCH here.
func WithCreated(t time.Time) SBOMOption {
	return func(o *sbomOptions) { o.created, o.set = t, true }
}

// WriteSBOM writes sbom.spdx.json, an SPDX 2.3 JSON document with one
// package per artifact of lock, which the document DESCRIBES. It is
// deterministic: the same lock gives the same bytes. The creation time is
// WithCreated's, else 1970-01-01T00:00:00Z (the bake time would make every
// bake differ); the documentNamespace
// is derived from the sha256 of the lock's encoding. Call it before
// WriteSums, which covers the SBOM.
func (s *Store) WriteSBOM(lock *Lock, opts ...SBOMOption) error {
	b, err := MarshalSBOM(lock, opts...)
	if err != nil {
		return err
	}
	if _, err := s.WriteFile(SBOMFile, b); err != nil {
		return fmt.Errorf("writing %s: %w", SBOMFile, err)
	}
	return nil
}

// MarshalSBOM encodes the SPDX document of lock (see WriteSBOM).
func MarshalSBOM(lock *Lock, opts ...SBOMOption) ([]byte, error) {
	doc, err := NewSBOM(lock, opts...)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep the & of purls readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// NewSBOM builds the SPDX document of lock (see WriteSBOM).
func NewSBOM(lock *Lock, opts ...SBOMOption) (*SPDXDocument, error) {
	o := sbomOptions{}
	for _, opt := range opts {
		opt(&o)
	}
	created := time.Unix(0, 0)
	if o.set {
		created = o.created
	}
	// Marshal sorts the artifacts: the document follows that order.
	raw, err := lock.Marshal()
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(raw)
	var sorted Lock
	if err := json.Unmarshal(raw, &sorted); err != nil {
		return nil, err
	}
	name := lock.Name
	if name == "" {
		name = "bundle"
	}
	if lock.Version != "" {
		name += "-" + lock.Version
	}
	doc := &SPDXDocument{
		SPDXVersion:       SPDXVersion,
		DataLicense:       spdxDataLicense,
		SPDXID:            "SPDXRef-DOCUMENT",
		Name:              name,
		DocumentNamespace: SBOMNamespacePrefix + spdxIDPart(name) + "-" + hex.EncodeToString(sum[:]),
		CreationInfo: SPDXCreationInfo{
			Created:  created.UTC().Format(time.RFC3339),
			Creators: []string{"Tool: kpaas-appliance"},
			Comment:  "The artifacts of the K-PaaS offline bundle, from its " + LockFile + ".",
		},
		Packages:      []SPDXPackage{},
		Relationships: []SPDXRelationship{},
	}
	ids := map[string]bool{}
	for _, a := range sorted.Artifacts {
		p := sbomPackage(a)
		id := "SPDXRef-" + string(a.Kind) + "-" + spdxIDPart(a.Ref)
		for i := 2; ids[id]; i++ {
			id = fmt.Sprintf("SPDXRef-%s-%s-%d", a.Kind, spdxIDPart(a.Ref), i)
		}
		ids[id] = true
		p.SPDXID = id
		doc.Packages = append(doc.Packages, p)
		doc.Relationships = append(doc.Relationships, SPDXRelationship{
			SPDXElementID: "SPDXRef-DOCUMENT", RelationshipType: "DESCRIBES", RelatedSPDXElement: id,
		})
	}
	return doc, nil
}

var notIDChar = regexp.MustCompile(`[^A-Za-z0-9.-]+`)

// spdxIDPart makes s usable in an SPDX identifier ([A-Za-z0-9.-]).
func spdxIDPart(s string) string {
	return strings.Trim(notIDChar.ReplaceAllString(s, "-"), "-")
}

func sbomPackage(a LockArtifact) SPDXPackage {
	repo, tag, _ := splitRef(a.Ref)
	p := SPDXPackage{
		Name:             repo,
		VersionInfo:      tag,
		DownloadLocation: downloadLocation(a),
		LicenseConcluded: spdxNoAssert,
		LicenseDeclared:  spdxNoAssert,
		CopyrightText:    spdxNoAssert,
		Comment:          fmt.Sprintf("%s %s in the bundle, digest %s", a.Kind, a.Ref, a.Digest),
	}
	if d, ok := strings.CutPrefix(a.Digest, "sha256:"); ok {
		p.Checksums = append(p.Checksums, SPDXChecksum{Algorithm: "SHA256", ChecksumValue: d})
	}
	if a.SourceRepository != "" {
		p.SourceInfo = "built from the sources of " + a.SourceRepository
		if a.SourceRevision != "" {
			p.SourceInfo += " at commit " + a.SourceRevision
		}
	}
	var purl string
	switch a.Kind {
	case KindImage:
		p.PrimaryPackagePurpose = "CONTAINER"
		purl = ociPURL(repo, tag, a.Digest)
	case KindOS:
		p.PrimaryPackagePurpose = "OPERATING-SYSTEM"
		purl = ociPURL(repo, tag, a.Digest)
	case KindChart:
		p.PrimaryPackagePurpose = "ARCHIVE"
		if a.Chart != nil {
			p.Name, p.VersionInfo = a.Chart.Name, a.Chart.Version
		}
		purl = ociPURL(repo, tag, a.Digest)
	case KindFile:
		p.PrimaryPackagePurpose = "FILE"
		q := url.Values{}
		if a.File != nil {
			p.Name = a.File.Name
			if a.File.SHA256 != "" {
				p.Checksums = append(p.Checksums, SPDXChecksum{Algorithm: "SHA256", ChecksumValue: a.File.SHA256})
				q.Set("checksum", "sha256:"+a.File.SHA256)
			}
		}
		if p.DownloadLocation != spdxNoAssert {
			q.Set("download_url", p.DownloadLocation)
		}
		purl = "pkg:generic/" + url.PathEscape(p.Name)
		if p.VersionInfo != "" {
			purl += "@" + url.PathEscape(p.VersionInfo)
		}
		if len(q) > 0 {
			purl += "?" + purlQuery(q)
		}
	}
	if purl != "" {
		p.ExternalRefs = []SPDXExternalRef{{ReferenceCategory: "PACKAGE-MANAGER", ReferenceType: "purl", ReferenceLocator: purl}}
	}
	return p
}

// ociPURL is pkg:oci/<last path element>@sha256%3A…?repository_url=…&tag=…
// (the purl spec's oci type).
func ociPURL(repo, tag, digest string) string {
	nameAt := repo[strings.LastIndex(repo, "/")+1:]
	q := url.Values{}
	q.Set("repository_url", repo)
	if tag != "" {
		q.Set("tag", tag)
	}
	return "pkg:oci/" + url.PathEscape(strings.ToLower(nameAt)) + "@" + url.QueryEscape(digest) + "?" + purlQuery(q)
}

// purlQuery encodes qualifiers sorted by key, keeping the characters
// purl allows unescaped in values (/ and :).
func purlQuery(q url.Values) string {
	s := q.Encode()
	return strings.NewReplacer("%2F", "/", "%3A", ":").Replace(s)
}

// downloadLocation is the artifact's upstream location as a URI, or
// NOASSERTION for local sources (mirror folders, layouts, local files).
func downloadLocation(a LockArtifact) string {
	switch src := a.Source; {
	case strings.HasPrefix(src, "registry:"):
		return "oci://" + a.Ref
	case strings.HasPrefix(src, "https://"), strings.HasPrefix(src, "http://"), strings.HasPrefix(src, "oci://"):
		return src
	}
	return spdxNoAssert
}

// splitRef splits registry/repo[:tag][@digest] into repository, tag and
// digest.
func splitRef(ref string) (repo, tag, digest string) {
	repo, digest, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo, tag = repo[:i], repo[i+1:]
	}
	return repo, tag, digest
}
