// Command hello is the demo bundle's workload: a tiny HTTP server that
// answers with its name and version. Its images are assembled from this
// source by mkmirror, so the demo bundle needs no registry.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
)

var version = "dev"

func main() {
	addr := flag.String("addr", ":8080", "listen address")
	probe := flag.String("probe", "", "GET this URL once and exit 0 on 200 (a health check)")
	flag.Parse()
	if *probe != "" {
		resp, err := http.Get(*probe)
		if err != nil || resp.StatusCode != http.StatusOK {
			fmt.Fprintln(os.Stderr, "probe failed:", err)
			os.Exit(1)
		}
		return
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		host, _ := os.Hostname()
		fmt.Fprintf(w, "hello from %s (kpaas demo %s)\n", host, version)
	})
	log.Printf("hello %s listening on %s", version, *addr)
	log.Fatal(http.ListenAndServe(*addr, nil))
}
