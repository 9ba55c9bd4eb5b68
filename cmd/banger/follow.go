package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/termsafe"
)

// exitInterrupted is the exit code after Ctrl-C (128 + SIGINT).
const exitInterrupted = 130

// follow prints a long operation's stages and output to stderr as they
// happen and returns the final operation. Ctrl-C cancels the operation, waits
// for it to revert and returns exitError{130}; a second Ctrl-C stops waiting.
func (e *env) follow(ctx context.Context, c *client.Client, op api.Operation) (api.Operation, error) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	fctx, stop := context.WithCancel(ctx)
	defer stop()
	interrupted := make(chan struct{})
	go func() {
		select {
		case <-sigs:
		case <-fctx.Done():
			return
		}
		close(interrupted)
		fmt.Fprintf(e.stderr, "cancelling %s (reverting; Ctrl-C again to stop waiting)…\n", op.Kind)
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := c.CancelOperation(cctx, op.ID); err != nil {
			fmt.Fprintf(e.stderr, "warning: cancelling: %v\n", err)
		}
		cancel()
		select {
		case <-sigs:
			stop()
		case <-fctx.Done():
		}
	}()

	printer := newStagePrinter(e.stderr)
	// Output lines are guest-written (a build script, a console tail).
	show := func(l string) string { return l }
	if termsafe.IsTerminal(e.stderr) {
		show = termsafe.String
	}
	next := 0
	final, err := c.Follow(fctx, op, func(o api.Operation) {
		printer.update(o)
		lines, n, lerr := c.OperationOutput(fctx, o.ID, next)
		if lerr != nil {
			return
		}
		next = n
		for _, l := range lines {
			fmt.Fprintln(e.stderr, "    "+show(l))
		}
	})
	select {
	case <-interrupted:
		return final, exitError{exitInterrupted}
	default:
	}
	return final, err
}

// startOp gets a client, begins an operation with it and, once it is
// begun, says what it does on stderr.
func (e *env) startOp(ctx context.Context, what string, begin func(*client.Client) (api.Operation, error)) (*client.Client, api.Operation, error) {
	c, err := e.client(ctx)
	if err != nil {
		return nil, api.Operation{}, err
	}
	op, err := begin(c)
	if err != nil {
		return nil, api.Operation{}, err
	}
	fmt.Fprintln(e.stderr, what)
	return c, op, nil
}

// startAndRun is startOp then runOp with no typed result.
func (e *env) startAndRun(ctx context.Context, what string, begin func(*client.Client) (api.Operation, error)) error {
	c, op, err := e.startOp(ctx, what, begin)
	if err != nil {
		return err
	}
	return e.runOp(ctx, c, op, nil)
}

// followResult follows op and decodes its result into out.
func (e *env) followResult(ctx context.Context, c *client.Client, op api.Operation, out any) error {
	final, err := e.follow(ctx, c, op)
	if err != nil {
		return err
	}
	return decodeResult(final, out)
}

func decodeResult(final api.Operation, out any) error {
	if err := json.Unmarshal(final.Result, out); err != nil {
		return fmt.Errorf("decoding %s result: %w", final.Kind, err)
	}
	return nil
}

// runOp follows op and prints the result: with --json the final operation,
// or (when result is non-nil) the operation's decoded result.
func (e *env) runOp(ctx context.Context, c *client.Client, op api.Operation, result any) error {
	final, err := e.follow(ctx, c, op)
	if err != nil {
		return err
	}
	if !e.jsonOut {
		return nil
	}
	if result != nil && len(final.Result) > 0 {
		if err := decodeResult(final, result); err != nil {
			return err
		}
		return e.printJSON(result)
	}
	return e.printJSON(final)
}
