// Command banger is the CLI: `banger <noun> <verb>`, thin command files
// calling the typed client (internal/client) of the daemon's socket.
//
// What it trusts: the daemon's answers, but not the guest-written text they
// carry (a console through vm logs, operation output lines, error messages
// quoting an engine's log). On a terminal that text is shown through
// internal/termsafe, its control characters as visible escapes; `vm logs
// --raw`, pipes and files get the bytes as written.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/buildinfo"
	"banger/internal/client"
	"banger/internal/config"
	"banger/internal/termsafe"
)

// env is what every command shares: streams, global flags, the config and
// the daemon client (made on first use).
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer

	configPath string
	jsonOut    bool

	cfgOnce sync.Once
	cfg     config.Config
	cfgErr  error

	warnOnce sync.Once
}

// exitError carries a process exit code without a message of its own.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// config loads the config once (the same file the daemon reads).
func (e *env) config() (config.Config, error) {
	e.cfgOnce.Do(func() {
		e.cfg, e.cfgErr = config.Load(e.configPath)
	})
	return e.cfg, e.cfgErr
}

// client returns a client for the daemon, starting it if needed.
func (e *env) client(ctx context.Context) (*client.Client, error) {
	cfg, err := e.config()
	if err != nil {
		return nil, err
	}
	c, err := client.EnsureDaemon(ctx, cfg, e.stderr)
	if err != nil {
		return nil, err
	}
	e.warnVersion(c)
	return c, nil
}

// warnVersion warns once when the daemon's build differs from ours.
func (e *env) warnVersion(c *client.Client) {
	if v, mismatch := c.VersionMismatch(); mismatch {
		e.warnOnce.Do(func() {
			fmt.Fprintf(e.stderr, "warning: bangerd is version %s, this banger is %s (restart it: banger daemon stop && banger daemon start)\n",
				v, buildinfo.Version)
		})
	}
}

// noArgsCmd is a command that takes no arguments and runs run.
func noArgsCmd(use, short string, run func(context.Context) error) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return run(cmd.Context()) }}
}

// call gets a client for the daemon (starting it if needed) and calls fn
// with it: the first two steps of nearly every command.
func call[T any](ctx context.Context, e *env, fn func(*client.Client) (T, error)) (T, error) {
	c, err := e.client(ctx)
	if err != nil {
		var zero T
		return zero, err
	}
	return fn(c)
}

// show calls fn with a client and prints its result: as JSON with --json,
// else with text on stdout.
func show[T any](ctx context.Context, e *env, fn func(*client.Client) (T, error), text func(io.Writer, T)) error {
	v, err := call(ctx, e, fn)
	if err != nil {
		return err
	}
	if e.jsonOut {
		return e.printJSON(v)
	}
	text(e.stdout, v)
	return nil
}

// printJSON writes v as indented JSON to stdout.
func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// newRoot builds the whole command tree.
func newRoot(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:           "banger",
		Short:         "Disposable, fast, isolated Linux microVMs on your own machine",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       buildinfo.String(),
	}
	root.SetIn(e.stdin)
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.PersistentFlags().StringVar(&e.configPath, "config", "",
		"config file (default $"+config.EnvVar+" or "+config.DefaultPath+")")
	root.PersistentFlags().BoolVar(&e.jsonOut, "json", false, "print results as JSON")
	root.AddGroup(&cobra.Group{ID: "main", Title: "Commands:"})
	for _, c := range []*cobra.Command{
		daemonCmd(e), imageCmd(e), vmCmd(e), snapshotCmd(e), webCmd(e), doctorCmd(e), versionCmd(e), mcpCmd(e),
	} {
		c.GroupID = "main"
		root.AddCommand(c)
	}
	rejectUnknownVerbs(root)
	return root
}

// rejectUnknownVerbs makes every group command (one with verbs under it and no
// action of its own) fail on an unknown verb instead of printing its help and
// exiting 0, so a script calling a verb this version lacks sees an error.
// With no verb it prints its help, as before.
func rejectUnknownVerbs(c *cobra.Command) {
	for _, sub := range c.Commands() {
		rejectUnknownVerbs(sub)
	}
	if !c.HasSubCommands() || c.Run != nil || c.RunE != nil || !c.HasParent() {
		return
	}
	c.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		return unknownVerb(cmd, args[0])
	}
	c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
}

// unknownVerb is the error for "banger <noun> <verb>" with a verb the noun
// lacks: it names the command, suggests close verbs and lists them all.
func unknownVerb(cmd *cobra.Command, verb string) error {
	var verbs []string
	for _, sub := range cmd.Commands() {
		if sub.IsAvailableCommand() {
			verbs = append(verbs, sub.Name())
		}
	}
	fix := fmt.Sprintf("%s has: %s (see %s --help)", cmd.CommandPath(), strings.Join(verbs, ", "), cmd.CommandPath())
	if s := cmd.SuggestionsFor(verb); len(s) > 0 {
		fix = fmt.Sprintf("did you mean %s %s? %s", cmd.CommandPath(), strings.Join(s, " or "), fix)
	}
	return api.Invalid("unknown command %q for %q", verb, cmd.CommandPath()).WithFix(fix)
}

// execute runs the CLI and returns the process exit code. Errors go to
// stderr as "banger: message" plus an indented fix line.
func execute(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRoot(e)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	printError(stderr, err)
	return 1
}

// printError prints err; on a terminal its text is neutralised, as it may
// quote an engine's log or a guest's console.
func printError(w io.Writer, err error) {
	show := func(s string) string { return s }
	if termsafe.IsTerminal(w) {
		show = termsafe.String
	}
	var ae *api.Error
	if errors.As(err, &ae) && ae.FixLine() != "" {
		fmt.Fprintf(w, "banger: %s\n  fix: %s\n", show(api.AsError(err).Message), show(ae.FixLine()))
		return
	}
	fmt.Fprintf(w, "banger: %s\n", show(err.Error()))
}

func main() {
	os.Exit(execute(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
