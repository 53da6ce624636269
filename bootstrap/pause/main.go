// The pod sandbox's process: holds the pod's namespaces open, reaps orphaned children when it is
// the pod's init process, and exits cleanly on SIGINT or SIGTERM — what upstream's pause
// (kubernetes/kubernetes build/pause/linux/pause.c) does. Built statically by
// e2e/stock/build.sh (CGO_ENABLED=0) so that its image needs nothing but this file.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Println("pause (ferrite)")
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "Warning: pause should be the first process")
	}
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			fmt.Fprintf(os.Stderr, "Shutting down, got signal: %v\n", sig)
			os.Exit(0)
		}
		// Several children may have exited for one delivered SIGCHLD.
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
