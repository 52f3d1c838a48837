// Command harborlocal runs a real Harbor on 127.0.0.1 from the toolchain's
// Harbor binaries (internal/harbor/harborlocal) until it receives SIGINT or
// SIGTERM, for benchmarks and by-hand trials. Once Harbor is healthy it
// writes its address and throwaway admin credentials as JSON to the file
// -o names (mode 0600), and prints the address.
//
//	go run ./hack/harborlocal -o out/harbor.json
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"kpaas.dev/appliance/internal/atomicfile"
	"kpaas.dev/appliance/internal/harbor/harborlocal"
)

func main() {
	out := flag.String("o", "", "write {url, host, user, password} as JSON to this file (mode 0600)")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "harborlocal: -o FILE is required")
		os.Exit(2)
	}
	h, err := harborlocal.Launch()
	if err != nil {
		fmt.Fprintln(os.Stderr, "harborlocal:", err)
		os.Exit(1)
	}
	defer h.Close()
	b, _ := json.Marshal(map[string]string{"url": h.URL, "host": h.Host, "user": h.Admin, "password": h.Password, "dir": h.Dir})
	if err := atomicfile.WriteFile(*out, append(b, '\n'), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "harborlocal:", err)
		return
	}
	fmt.Println("harborlocal: Harbor healthy at", h.URL)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}
