package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/spf13/cobra"

	"banger/internal/api"
)

func vmOpencodeCmd(e *env) *cobra.Command {
	var noOpen bool
	cmd := &cobra.Command{
		Use:   "opencode NAME",
		Short: "Print (and open) the URL of a VM's opencode server",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.vmOpencode(cmd.Context(), args[0], !noOpen)
		},
	}
	cmd.Flags().BoolVar(&noOpen, "no-open", false, "only print the URL, never start a browser")
	return cmd
}

// vmOpencode prints the opencode URLs of a running VM, by name first, and
// opens the address form with xdg-open when a display is there.
func (e *env) vmOpencode(ctx context.Context, name string, open bool) error {
	c, err := e.client(ctx)
	if err != nil {
		return err
	}
	d, err := c.GetVM(ctx, name)
	if err != nil {
		return err
	}
	var urls []string
	for _, u := range d.URLs {
		if strings.HasSuffix(u, ":4096") {
			urls = append(urls, u)
		}
	}
	if len(urls) == 0 {
		if !d.Alive || d.VM.Runtime.State != api.VMRunning {
			return api.FailedPrecondition("vm %q is %s, not running", name, d.VM.Runtime.State).
				WithFix("banger vm start " + name)
		}
		return api.FailedPrecondition("vm %q runs image %q, which has no opencode", name, d.VM.ImageName).
			WithFix("build one: banger image build " + d.VM.ImageName + "-opencode --from " + d.VM.ImageName +
				" --with opencode, then banger vm create --image " + d.VM.ImageName + "-opencode")
	}
	if e.jsonOut {
		return e.printJSON(struct {
			URLs []string `json:"urls"`
		}{urls})
	}
	for _, u := range urls {
		fmt.Fprintln(e.stdout, u)
	}
	if open && hasDisplay() {
		if xdg, err := exec.LookPath("xdg-open"); err == nil {
			target := urls[len(urls)-1] // the address form needs no DNS setup
			if err := exec.Command(xdg, target).Start(); err != nil {
				fmt.Fprintf(e.stderr, "warning: xdg-open %s: %v\n", target, err)
			}
		}
	}
	return nil
}

func hasDisplay() bool {
	return os.Getenv("DISPLAY") != "" || os.Getenv("WAYLAND_DISPLAY") != ""
}
