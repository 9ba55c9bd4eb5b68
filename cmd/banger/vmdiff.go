package main

import (
	"context"
	"encoding/base64"
	"fmt"

	"github.com/spf13/cobra"

	"banger/internal/client"
	"banger/internal/termsafe"
	"banger/internal/workspace"
)

func vmDiffCmd(e *env) *cobra.Command {
	var (
		repo    string
		apply   bool
		maxSize sizeFlag
	)
	cmd := &cobra.Command{
		Use:   "diff VM [--repo DIR] [--apply]",
		Short: "Print (or apply as a new branch) what changed in a VM's workspace",
		Long: "Prints, as a binary-safe git patch, every change made in the VM's " + workspace.GuestDir + " since\n" +
			"vm create --workspace put it there: committed or not, new files included. With --apply the patch\n" +
			"becomes branch banger/VM in the repository (--repo, default the current directory), on top of the\n" +
			"tree the VM was given; your current branch, index and working tree are not touched.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.vmDiff(cmd.Context(), args[0], repo, apply, maxSize.bytes())
		},
	}
	cmd.Flags().StringVar(&repo, "repo", ".", "the repository given to --workspace")
	cmd.Flags().BoolVar(&apply, "apply", false, "make branch banger/VM with the changes instead of printing them")
	cmd.Flags().Var(&maxSize, "max-size", "largest patch accepted from the guest (default 64MiB)")
	return cmd
}

// diffResult is what `vm diff --json` prints.
type diffResult struct {
	VM          string             `json:"vm"`
	Repo        string             `json:"repo"`
	Base        string             `json:"base"`
	Bytes       int                `json:"bytes"`
	PatchBase64 string             `json:"patch_base64,omitempty"`
	Applied     *workspace.Applied `json:"applied,omitempty"`
}

func (e *env) vmDiff(ctx context.Context, vm, repoDir string, apply bool, maxBytes int64) error {
	r, err := workspace.Open(ctx, repoDir)
	if err != nil {
		return err
	}
	base, err := r.Base(ctx, vm)
	if err != nil {
		return err
	}
	c, err := e.client(ctx)
	if err != nil {
		return err
	}
	patch, err := workspace.Diff(ctx, execDialer(c, vm), base, maxBytes)
	if err != nil {
		return err
	}
	res := diffResult{VM: vm, Repo: r.Dir, Base: base, Bytes: len(patch)}
	if apply {
		a, err := r.Apply(ctx, vm, patch)
		if err != nil {
			return err
		}
		res.Applied = &a
	} else if e.jsonOut {
		res.PatchBase64 = base64.StdEncoding.EncodeToString(patch)
	}
	if e.jsonOut {
		return e.printJSON(res)
	}
	switch {
	case !apply && termsafe.IsTerminal(e.stdout):
		tw := termsafe.NewWriter(e.stdout)
		tw.Write(patch)
		return tw.Flush()
	case !apply:
		_, err := e.stdout.Write(patch)
		return err
	case res.Applied.Branch == "":
		fmt.Fprintf(e.stderr, "no changes in vm %s since its workspace was made\n", vm)
	default:
		fmt.Fprintf(e.stderr, "applied %d changed files from vm %s as branch %s (commit %.12s) in %s;\n"+
			"your current branch and working tree are unchanged. Review: git diff %.12s %s\n",
			res.Applied.Files, vm, res.Applied.Branch, res.Applied.Commit, r.Dir, base, res.Applied.Branch)
	}
	return nil
}

// openWorkspace checks --workspace before a VM is made.
func openWorkspace(ctx context.Context, dir string) (*workspace.Repo, error) {
	if dir == "" {
		return nil, nil
	}
	r, err := workspace.Open(ctx, dir)
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// pushWorkspace puts the repository into a new VM at /root/work; on
// failure it deletes the VM (a create with --workspace is all or nothing).
func (e *env) pushWorkspace(ctx context.Context, c *client.Client, r *workspace.Repo, vm string) error {
	if r == nil {
		return nil
	}
	fmt.Fprintf(e.stderr, "copying the working tree of %s into %s:%s\n", r.Dir, vm, workspace.GuestDir)
	if _, err := workspace.Push(ctx, execDialer(c, vm), *r, vm); err != nil {
		if op, derr := c.DeleteVM(context.WithoutCancel(ctx), vm); derr == nil {
			c.Follow(context.WithoutCancel(ctx), op, nil)
		}
		return fmt.Errorf("workspace: %w (vm %s deleted)", err, vm)
	}
	return nil
}
