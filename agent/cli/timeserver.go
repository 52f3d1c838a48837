package cli

import (
	"fmt"
	"net"
	"time"

	"github.com/spf13/cobra"

	"kpaas.dev/appliance/agent/timeserver"
)

func newTimeserverCmd(s *streams, o *options) *cobra.Command {
	var addr string
	c := &cobra.Command{
		Use:   "timeserver --addr IP:123",
		Short: "Serve this node's clock over SNTP to the nodes with no NTP server (the first control plane's kpaas-timeserver service)",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			conn, err := net.ListenPacket("udp", addr)
			if err != nil {
				return err
			}
			fmt.Fprintf(s.out, "kpaas-agent timeserver: serving this node's clock (stratum %d) on %s\n", timeserver.Stratum, conn.LocalAddr())
			return timeserver.Serve(c.Context(), conn, time.Now)
		},
	}
	c.Flags().StringVar(&addr, "addr", "", "the node address and port to listen on")
	c.MarkFlagRequired("addr")
	return c
}
