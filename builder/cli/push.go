package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/push"
)

// PasswordEnv is the environment variable push reads a registry password
// from when --password-stdin is not given.
const PasswordEnv = "KPAAS_REGISTRY_PASSWORD"

func newPushCmd(s *streams) *cobra.Command {
	var (
		o             push.Options
		perRegistry   bool
		passwordStdin bool
		asJSON        bool
		chunkMiB      int64
		timeout       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "push BUNDLE --registry HOST[:PORT] [--harbor] [--project-per-registry | --project NAME | --prefix PATH]",
		Short: "Push a bundle's images and charts into Harbor or any OCI registry",
		Long: `Push copies every image and Helm chart of a bundle into a registry, digests
unchanged: blobs the registry has are skipped, blobs another repository of
the push received are mounted, the rest are streamed from the bundle (and
verified on the way). Multi-arch indexes are pushed whole, then tagged.
An interrupted push resumes where it stopped; pushing again sends nothing.

Where artifacts go (docker.io/library/nginx:1.25 as the example):
  --project-per-registry (default)  HOST/docker.io/library/nginx:1.25
  --project NAME                    HOST/NAME/library/nginx:1.25
  --prefix PATH                     HOST/PATH/library/nginx:1.25
With --harbor the first path component is a Harbor project: missing ones
are created first (--public-projects to make them public).

The password is read from stdin (--password-stdin) or the environment
variable ` + PasswordEnv + `, never from a flag. See docs/push.md.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if perRegistry && (o.Mapping.Project != "" || o.Mapping.Prefix != "") {
				return errors.New("--project-per-registry excludes --project and --prefix")
			}
			if passwordStdin {
				if o.Username == "" {
					return errors.New("--password-stdin needs --username")
				}
				pw, err := readPassword(s.in)
				if err != nil {
					return err
				}
				o.Password = pw
			} else if o.Username != "" {
				o.Password = os.Getenv(PasswordEnv)
			}
			o.ChunkThreshold = chunkMiB << 20
			o.RequestTimeout = timeout
			if !asJSON {
				o.Progress = s.err
			}
			store, err := bundle.Open(args[0])
			if err != nil {
				return err
			}
			sum, err := push.Push(cmd.Context(), store, o)
			if asJSON {
				if jerr := writeJSON(s.out, sum); jerr != nil && err == nil {
					err = jerr
				}
			} else {
				fmt.Fprintln(s.out, sum)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Registry, "registry", "", "target registry HOST[:PORT] (required)")
	f.BoolVar(&o.Harbor, "harbor", false, "the registry is Harbor: create missing projects through its API")
	f.BoolVar(&o.PublicProjects, "public-projects", false, "make the Harbor projects it creates public")
	f.BoolVar(&perRegistry, "project-per-registry", false, "one project (first path component) per source registry (the default)")
	f.StringVar(&o.Mapping.Project, "project", "", "put every artifact under this project")
	f.StringVar(&o.Mapping.Prefix, "prefix", "", "put every artifact under this path prefix")
	f.StringVar(&o.Username, "username", "", "registry user name")
	f.BoolVar(&passwordStdin, "password-stdin", false, "read the password from stdin (else $"+PasswordEnv+")")
	f.BoolVar(&o.Insecure, "insecure", false, "allow plain HTTP and unverified TLS certificates")
	f.IntVar(&o.Jobs, "jobs", push.DefaultJobs, "blob requests in flight")
	f.Int64Var(&chunkMiB, "chunk-threshold", push.DefaultChunkThreshold>>20, "upload blobs of this many MiB or more in chunks")
	f.DurationVar(&timeout, "timeout", push.DefaultRequestTimeout, "timeout of each request (bodies get extra time by size)")
	f.BoolVar(&asJSON, "json", false, "print the summary as JSON on stdout (no progress lines)")
	_ = cmd.MarkFlagRequired("registry")
	return cmd
}

// readPassword reads the first line of r.
func readPassword(r io.Reader) (string, error) {
	if r == nil {
		return "", errors.New("--password-stdin: no stdin")
	}
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("reading the password from stdin: %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", errors.New("--password-stdin: empty password")
	}
	return pw, nil
}
