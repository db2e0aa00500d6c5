// Command tariq runs and manages a tariq server: a WireGuard endpoint and a
// TURN relay in one daemon. See `tariq --help`.
package main

import (
	"context"
	"os"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
