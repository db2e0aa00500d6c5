package main

import (
	"os"
	"sync/atomic"
	"testing"
)

// builtDir is the directory buildTariq built the binary in, if it did.
var builtDir atomic.Pointer[string]

func TestMain(m *testing.M) {
	code := m.Run()
	if dir := builtDir.Load(); dir != nil {
		os.RemoveAll(*dir)
	}
	os.Exit(code)
}
