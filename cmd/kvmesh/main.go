package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// Exit codes: 0 success, 1 a check failed, 2 bad input (flags or files).
const (
	exitFailed   = 1
	exitBadInput = 2
)

// exitError carries an exit code out of a command.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }

func badInput(format string, a ...any) error {
	return exitError{exitBadInput, fmt.Errorf(format, a...)}
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// run executes the command line args and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	root := &cobra.Command{
		Use:           "kvmesh",
		Short:         "kvmesh: a cache runtime for LLM inference (EasyDeL's caching layer in Go)",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return exitError{exitBadInput, err} })
	root.AddCommand(newRunCmd(), newParityCmd(), newBenchCmd())
	root.AddCommand(newSimCmd(), newNodeCmd())
	root.AddCommand(newInspectCmd())
	err := root.Execute()
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "kvmesh:", err)
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitBadInput // cobra's own errors: unknown command or flag
}
