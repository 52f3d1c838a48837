package cli

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	bundlev1 "kpaas.dev/appliance/api/bundle/v1alpha1"
	"kpaas.dev/appliance/internal/clustersecrets"
)

// generatePlatformSecrets makes the platform secrets' files the bundle
// manifest at file declares that dir lacks, and returns their names.
func generatePlatformSecrets(dir, file string) ([]string, error) {
	b, err := bundlev1.Load(file)
	if err != nil {
		return nil, err
	}
	if b.Platform == nil || len(b.Platform.Secrets) == 0 {
		return nil, nil
	}
	return clustersecrets.GeneratePlatform(dir, b.Platform.Secrets)
}

// platformSecret is one row of `kpaas cluster secrets`.
type platformSecret struct {
	Name        string `json:"name"`
	Path        string `json:"path"`
	Secret      string `json:"secret,omitempty"` // only with --show
	Namespace   string `json:"namespace,omitempty"`
	Description string `json:"description,omitempty"`
}

func newClusterSecretsCmd(s *streams) *cobra.Command {
	var show, bundle string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "secrets DIR [--bundle FILE] [--show NAME[/PART]]",
		Short: "List the platform's per-cluster secrets (passwords) of a site; print one with --show",
		Long: `Secrets lists the platform secrets in DIR/secrets/platform (made by
kpaas cluster init --bundle): names and files, never their content.

--bundle FILE first generates the secrets FILE's platform declares that DIR
lacks (existing ones are kept), and names the Kubernetes Secret each
becomes. --show NAME prints that one secret, and nothing else, on standard
output: the password an operator types into Harbor, Keycloak or the portal.
A secret's other parts are NAME/htpasswd, NAME/tls.crt and NAME/tls.key.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			if show != "" {
				b, err := clustersecrets.ReadPlatform(dir, show)
				if err != nil {
					return fmt.Errorf("platform secret %q: %w", show, err)
				}
				fmt.Fprintln(s.out, strings.TrimSpace(string(b)))
				return nil
			}
			described := map[string]platformSecret{}
			if bundle != "" {
				made, err := generatePlatformSecrets(dir, bundle)
				if err != nil {
					return err
				}
				for _, m := range made {
					fmt.Fprintf(s.err, "generated %s\n", m)
				}
				b, err := bundlev1.Load(bundle)
				if err != nil {
					return err
				}
				if b.Platform != nil {
					for _, sec := range b.Platform.Secrets {
						described[sec.Name] = platformSecret{Namespace: sec.Namespace, Description: sec.Description}
					}
				}
			}
			names, err := clustersecrets.PlatformNames(dir)
			if err != nil {
				return err
			}
			var rows []platformSecret
			for _, n := range names {
				name := strings.TrimPrefix(n, clustersecrets.PlatformDir+"/")
				base, _, _ := strings.Cut(name, ".")
				r := described[base]
				// A part's file, NAME.PART, is shown as --show takes it.
				r.Name, r.Path = strings.Replace(name, ".", "/", 1), filepath.Join(dir, "secrets", filepath.FromSlash(n))
				rows = append(rows, r)
			}
			if asJSON {
				return writeJSON(s.out, rows)
			}
			if len(rows) == 0 {
				return errors.New("no platform secrets in " + filepath.Join(dir, "secrets", clustersecrets.PlatformDir) + ": run kpaas cluster secrets DIR --bundle MANIFEST")
			}
			tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tKUBERNETES SECRET\tFILE\tWHAT")
			for _, r := range rows {
				ks := ""
				if r.Namespace != "" {
					base, part, ok := strings.Cut(r.Name, "/")
					ks = r.Namespace + "/" + base
					if ok {
						ks += " (" + part + ")"
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, ks, r.Path, r.Description)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(s.out, "\nshow one: kpaas cluster secrets %s --show NAME\n", dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&show, "show", "", "print the secret NAME (or its part NAME/PART)")
	cmd.Flags().StringVar(&bundle, "bundle", "", "generate the secrets this bundle manifest's platform declares that DIR lacks")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the list as JSON")
	return cmd
}
