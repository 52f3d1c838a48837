package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"kpaas.dev/appliance/internal/bundle"
)

func newKeyCmd(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Manage the ed25519 keys that sign bundles",
	}
	cmd.AddCommand(newKeyGenerateCmd(s))
	return cmd
}

func newKeyGenerateCmd(s *streams) *cobra.Command {
	var prefix string
	cmd := &cobra.Command{
		Use:   "generate [-o PREFIX]",
		Short: "Write a new key pair: PREFIX.key (private, mode 0600) and PREFIX.pub",
		Long: `Generate writes a new ed25519 key pair: PREFIX.key, the private key (PKCS#8
PEM, mode 0600, for 'kpaas bake --sign-key'), and PREFIX.pub, the public key
(PKIX PEM, for 'kpaas bundle verify --key' and the agent). Existing files are
never overwritten. The private key is never printed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			priv, pub := prefix+".key", prefix+".pub"
			k, err := bundle.GenerateKey(priv, pub)
			if err != nil {
				return err
			}
			fmt.Fprintf(s.out, "wrote %s (private: keep it secret) and %s\nfingerprint %s\n", priv, pub, bundle.Fingerprint(k))
			return nil
		},
	}
	cmd.Flags().StringVarP(&prefix, "out", "o", "kpaas", "path prefix of the key files")
	return cmd
}
