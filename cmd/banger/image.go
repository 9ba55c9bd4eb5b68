package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/client"
)

func imageCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Manage images"}
	cmd.AddCommand(
		imageListCmd(e),
		&cobra.Command{Use: "show NAME", Short: "Show an image", Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error { return e.imageShow(cmd.Context(), args[0]) }},
		imageCreateCmd(e), imageRegisterCmd(e), imageDeleteCmd(e), imageBuildCmd(e), imagePromoteCmd(e),
		imageWarmCmd(e), imageUnwarmCmd(e),
	)
	return cmd
}

func imageCreateCmd(e *env) *cobra.Command {
	var (
		req    api.ImageCreateRequest
		debian bool
		size   sizeFlag
	)
	cmd := &cobra.Command{
		Use:   "create NAME --from-debian [SUITE]",
		Short: "Build an image from Debian with debootstrap",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !debian {
				return api.Invalid("image create needs a source").WithFix("add --from-debian [SUITE]")
			}
			req.Name = args[0]
			req.Suite = "bookworm"
			if len(args) == 2 {
				req.Suite = args[1]
			}
			req.Size = size.bytes()
			return e.imageCreate(cmd.Context(), req)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&debian, "from-debian", false, "build from Debian (optional SUITE argument, default bookworm)")
	f.StringVar(&req.Mirror, "mirror", "", "Debian mirror URL: only the daemon's debian_mirror is accepted (kept for old scripts; leave it out)")
	f.StringSliceVar(&req.Packages, "packages", nil, "extra packages, comma-separated")
	f.Var(&size, "size", "root filesystem size, e.g. 4GiB (default: fit plus headroom)")
	f.StringSliceVar(&req.With, "with", nil, "features to bake in, e.g. opencode")
	return cmd
}

func imageRegisterCmd(e *env) *cobra.Command {
	var req api.ImageRegisterRequest
	cmd := &cobra.Command{
		Use:   "register NAME --kernel F --initrd F --rootfs F",
		Short: "Adopt an existing kernel, initrd and root filesystem as an image",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			return e.imageRegister(cmd.Context(), req)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Kernel, "kernel", "", "kernel (bzImage) path")
	f.StringVar(&req.Initrd, "initrd", "", "initramfs path")
	f.StringVar(&req.Rootfs, "rootfs", "", "root filesystem image path")
	f.StringVar(&req.WorkSeed, "work-seed", "", "work disk seed image path")
	f.StringVar(&req.Vmlinux, "vmlinux", "", "uncompressed kernel (for Firecracker)")
	for _, n := range []string{"kernel", "initrd", "rootfs"} {
		_ = cmd.MarkFlagRequired(n)
	}
	return cmd
}

func imageDeleteCmd(e *env) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete an image",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.imageDelete(cmd.Context(), args[0], force)
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "delete even if other images were built from it (VMs using it still block)")
	return cmd
}

func (e *env) imageList(ctx context.Context, tree bool) error {
	text := imageTable
	if tree {
		text = imageTree
	}
	return show(ctx, e, func(c *client.Client) ([]api.Image, error) { return c.ListImages(ctx) }, text)
}

func (e *env) imageShow(ctx context.Context, name string) error {
	return show(ctx, e, func(c *client.Client) (api.Image, error) { return c.GetImage(ctx, name) }, imageFields)
}

func (e *env) imageCreate(ctx context.Context, req api.ImageCreateRequest) error {
	return e.startAndRun(ctx, "creating image "+req.Name+" from debian "+req.Suite,
		func(c *client.Client) (api.Operation, error) { return c.CreateImage(ctx, req) })
}

func (e *env) imageRegister(ctx context.Context, req api.ImageRegisterRequest) error {
	return e.startAndRun(ctx, "registering image "+req.Name,
		func(c *client.Client) (api.Operation, error) { return c.RegisterImage(ctx, req) })
}

func (e *env) imageDelete(ctx context.Context, name string, force bool) error {
	c, err := e.client(ctx)
	if err != nil {
		return err
	}
	if err := c.DeleteImage(ctx, name, force); err != nil {
		return err
	}
	if e.jsonOut {
		return e.printJSON(struct {
			Deleted string `json:"deleted"`
		}{name})
	}
	fmt.Fprintf(e.stderr, "deleted image %s\n", name)
	return nil
}
