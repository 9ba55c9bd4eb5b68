package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/client"
)

func imageBuildCmd(e *env) *cobra.Command {
	var (
		req     api.ImageBuildRequest
		script  string
		copies  []string
		size    sizeFlag
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "build NAME --from IMAGE [--script FILE] [--copy SRC:DST]... [--with opencode]",
		Short: "Build an image from an image: boot a builder VM, provision it, capture it",
		Long: `Boot a builder VM from --from, copy files in (--copy SRC:DST), run --script as root
in /root with its output streamed here, shut it down and capture its disks as a new image
whose parent is --from. --with opencode also runs the shipped opencode script.
A failing script, --timeout or Ctrl-C remove the builder VM and register nothing.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			if err := resolveBuild(&req, script, copies, size, timeout); err != nil {
				return err
			}
			return e.imageLongOp(cmd.Context(), "building image "+req.Name+" from "+req.From,
				func(c *client.Client) (api.Operation, error) { return c.BuildImage(cmd.Context(), req) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.From, "from", "", "the parent image (required)")
	f.StringVar(&script, "script", "", "executable script run as root in the builder (read by this CLI and sent)")
	f.StringArrayVar(&copies, "copy", nil, "copy a file into the builder, SRC:DST (repeatable; read by this CLI and sent)")
	f.Var(&size, "size", "root filesystem size, e.g. 4GiB (default: the parent's)")
	f.StringSliceVar(&req.With, "with", nil, "features to add, e.g. opencode")
	f.StringArrayVar(&req.Env, "env", nil, "KEY=VALUE in the scripts' environment (repeatable), e.g. http_proxy=…")
	f.DurationVar(&timeout, "timeout", 30*time.Minute, "abort the build after this long")
	_ = cmd.MarkFlagRequired("from")
	return cmd
}

// resolveBuild reads --script and the --copy sources as the user running
// the CLI and puts their contents in the request: the daemon (root) never
// opens a path a caller names. Together they may be api.MaxBuildUpload
// bytes.
func resolveBuild(req *api.ImageBuildRequest, script string, copies []string, size sizeFlag, timeout time.Duration) error {
	total := 0
	read := func(flag, src string) (*api.FileUpload, error) {
		f, err := readUpload(flag, src, api.MaxBuildUpload-total)
		if f != nil {
			total += len(f.Data)
		}
		return f, err
	}
	if script != "" {
		f, err := read("--script", script)
		if err != nil {
			return err
		}
		if f.Mode&0o111 == 0 {
			return api.Invalid("--script %s is not executable", script).WithFix("chmod +x " + script)
		}
		req.ScriptFile = f
	}
	for _, c := range copies {
		src, dst, ok := strings.Cut(c, ":")
		if !ok || src == "" || dst == "" {
			return api.Invalid("--copy %q is not SRC:DST", c).WithFix("--copy ./file:/etc/file")
		}
		f, err := read("--copy", src)
		if err != nil {
			return err
		}
		req.Copy = append(req.Copy, api.ImageCopy{File: f, Dst: dst})
	}
	if timeout <= 0 {
		return api.Invalid("--timeout %s must be positive", timeout).WithFix("--timeout 30m")
	}
	req.Size = size.bytes()
	req.TimeoutSeconds = int((timeout + time.Second - 1) / time.Second)
	return nil
}

// readUpload reads a regular file of at most room bytes (what is left of
// api.MaxBuildUpload) for a build request, as the user running the CLI.
func readUpload(flag, src string, room int) (*api.FileUpload, error) {
	fh, err := os.Open(src)
	if err != nil {
		return nil, api.Invalid("%s %s: %w", flag, src, err).WithFix("check the path and that you can read it")
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return nil, api.Invalid("%s %s: %w", flag, src, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, api.Invalid("%s %s is not a regular file", flag, src).
			WithFix("copy files one by one (or pack a directory with tar and unpack it in --script)")
	}
	tooBig := api.Invalid("%s %s: the build's files would be more than the %d MiB limit", flag, src, api.MaxBuildUpload>>20).
		WithFix("download large files inside --script (curl, apt) or put them in a VM and promote it")
	if fi.Size() > int64(room) {
		return nil, tooBig
	}
	data, err := io.ReadAll(io.LimitReader(fh, int64(room)+1))
	if err != nil {
		return nil, api.Invalid("%s %s: %w", flag, src, err)
	}
	if len(data) > room {
		return nil, tooBig
	}
	return &api.FileUpload{Name: src, Mode: uint32(fi.Mode().Perm()), Data: data}, nil
}

func imagePromoteCmd(e *env) *cobra.Command {
	var req api.ImagePromoteRequest
	cmd := &cobra.Command{
		Use:   "promote VM NAME [--with-work-disk]",
		Short: "Turn a stopped VM's disks into a new image",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.VM, req.Name = args[0], args[1]
			return e.imageLongOp(cmd.Context(), "promoting vm "+req.VM+" to image "+req.Name,
				func(c *client.Client) (api.Operation, error) { return c.PromoteImage(cmd.Context(), req) })
		},
	}
	cmd.Flags().BoolVar(&req.WithWorkDisk, "with-work-disk", false, "the VM's /root becomes the image's work-seed")
	return cmd
}

// imageLongOp begins an image operation, follows it and prints the new
// image's name (or, with --json, the image).
func (e *env) imageLongOp(ctx context.Context, what string, begin func(*client.Client) (api.Operation, error)) error {
	c, op, err := e.startOp(ctx, what, begin)
	if err != nil {
		return err
	}
	var img api.Image
	if err := e.followResult(ctx, c, op, &img); err != nil {
		return err
	}
	if e.jsonOut {
		return e.printJSON(img)
	}
	fmt.Fprintln(e.stdout, img.Name)
	fmt.Fprintf(e.stderr, "new vm from it: banger vm create --image %s\n", img.Name)
	return nil
}

func imageListCmd(e *env) *cobra.Command {
	var tree bool
	cmd := &cobra.Command{Use: "list", Aliases: []string{"ls"}, Short: "List images", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return e.imageList(cmd.Context(), tree) }}
	cmd.Flags().BoolVar(&tree, "tree", false, "show ancestry: each image under the image it was built from")
	return cmd
}

// imageTree prints images as parent → child trees; an image whose parent
// is gone (deleted with --force) is a root, marked with its old parent.
func imageTree(w io.Writer, imgs []api.Image) {
	byName := map[string]bool{}
	children := map[string][]api.Image{}
	for _, img := range imgs {
		byName[img.Name] = true
	}
	var roots []api.Image
	for _, img := range imgs {
		if img.Parent != "" && byName[img.Parent] && img.Parent != img.Name {
			children[img.Parent] = append(children[img.Parent], img)
			continue
		}
		roots = append(roots, img)
	}
	var walk func(img api.Image, prefix, branch string, depth int)
	walk = func(img api.Image, prefix, branch string, depth int) {
		line := prefix + branch + img.Name + "  (" + orDash(img.Source)
		if img.Parent != "" && !byName[img.Parent] {
			line += ", parent " + img.Parent + " deleted"
		}
		fmt.Fprintln(w, line+")")
		if depth > len(imgs) { // a cycle in corrupt data
			return
		}
		kids := children[img.Name]
		next := prefix
		switch branch {
		case "├─ ":
			next += "│  "
		case "└─ ":
			next += "   "
		}
		for i, k := range kids {
			b := "├─ "
			if i == len(kids)-1 {
				b = "└─ "
			}
			walk(k, next, b, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, "", "", 0)
	}
}
