package v1alpha1

// DefaultPlatform is the platform of a bundle that names none.
const DefaultPlatform = "linux/amd64"

// DefaultFileMode is the mode of a file that names none.
const DefaultFileMode = "0644"

// Default fills in the fields a manifest may leave out: the bundle's
// platforms, each chart's release and namespace, each file's mode.
// It changes only empty fields, so calling it twice is harmless.
// Parse calls it before Validate.
func (b *Bundle) Default() {
	if len(b.Platforms) == 0 {
		b.Platforms = []string{DefaultPlatform}
	}
	for i := range b.Charts {
		c := &b.Charts[i]
		if c.Release == "" {
			c.Release = c.Name
		}
		if c.Namespace == "" {
			c.Namespace = c.Release
		}
	}
	b.defaultPlatform()
	for i := range b.Files {
		if b.Files[i].Mode == "" {
			b.Files[i].Mode = DefaultFileMode
		}
	}
}
