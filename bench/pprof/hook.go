//go:build umbench_pprof

// This file is not part of any build of the repository: bench/run.sh
// --profile overlays it into cmd/umrouter (go build -tags umbench_pprof
// -overlay), so that a bench-only binary serves net/http/pprof on the
// address in $UMROUTER_BENCH_PPROF. The daemon's admin server is not
// changed and production binaries never carry the handlers.
package main

import (
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on http.DefaultServeMux
	"os"
	"runtime"
)

func init() {
	addr := os.Getenv("UMROUTER_BENCH_PPROF")
	if addr == "" {
		return
	}
	runtime.SetMutexProfileFraction(100) // 1 % of contended mutex events
	go func() { _ = http.ListenAndServe(addr, nil) }()
}
