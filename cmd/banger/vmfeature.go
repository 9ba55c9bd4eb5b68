package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/feature"
)

// vmFeatureCmd is `banger vm <feature> NAME`: it prints (and opens) the
// URLs of the feature's server in a VM (feature.Opencode: `vm opencode`).
func vmFeatureCmd(e *env, d feature.Descriptor) *cobra.Command {
	var noOpen bool
	cmd := &cobra.Command{
		Use:   d.Name + " NAME",
		Short: "Print (and open) the URL of a VM's " + d.Name + " server",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.vmFeatureURLs(cmd.Context(), d, args[0], !noOpen)
		},
	}
	cmd.Flags().BoolVar(&noOpen, "no-open", false, "only print the URL, never start a browser")
	return cmd
}

// vmFeatureURLs prints the URLs of feature d in a running VM, by name
// first, then (when the server has a per-VM password) the address form
// with the credential in it, which it opens with xdg-open when a display
// is there. Only callers the daemon serves get the credential.
func (e *env) vmFeatureURLs(ctx context.Context, d feature.Descriptor, name string, open bool) error {
	vm, err := call(ctx, e, func(c *client.Client) (api.VMDetail, error) { return c.GetVM(ctx, name) })
	if err != nil {
		return err
	}
	port := ":" + strconv.Itoa(d.Port)
	var urls []string
	for _, u := range vm.URLs {
		if strings.HasSuffix(u, port) {
			urls = append(urls, u)
		}
	}
	if len(urls) == 0 {
		if !vm.Alive || vm.VM.Runtime.State != api.VMRunning {
			return api.FailedPrecondition("vm %q is %s, not running", name, vm.VM.Runtime.State).
				WithAction("vm start", name)
		}
		img := vm.VM.ImageName
		return api.FailedPrecondition("vm %q runs image %q, which has no %s", name, img, d.Name).
			WithFix("build one: banger image build " + img + "-" + d.Name + " --from " + img +
				" --with " + d.Name + ", then banger vm create --image " + img + "-" + d.Name)
	}
	acc := featureAccess(vm, d.Name)
	if e.jsonOut {
		return e.printJSON(struct {
			URLs []string `json:"urls"`
			api.FeatureAccess
		}{urls, acc})
	}
	for _, u := range urls {
		fmt.Fprintln(e.stdout, u)
	}
	target := urls[len(urls)-1] // the address form needs no DNS setup
	if acc.Warning != "" {
		fmt.Fprintln(e.stderr, "warning: "+acc.Warning)
	}
	if acc.Password != "" {
		// Last, alone on its line: the URL a browser (or
		// `OPENCODE_SERVER_PASSWORD=... opencode attach URL`) needs.
		target = acc.URL
		fmt.Fprintln(e.stdout, target)
	}
	if open && hasDisplay() {
		if xdg, err := exec.LookPath("xdg-open"); err == nil {
			if err := exec.Command(xdg, target).Start(); err != nil {
				fmt.Fprintf(e.stderr, "warning: xdg-open %s: %v\n", d.URL(vm.VM.Runtime.GuestIP), err)
			}
		}
	}
	return nil
}

// featureAccess is the VM's access entry for feature name (zero when the
// daemon sent none: an older daemon).
func featureAccess(vm api.VMDetail, name string) api.FeatureAccess {
	for _, a := range vm.Access {
		if a.Feature == name {
			return a
		}
	}
	return api.FeatureAccess{Feature: name}
}

func hasDisplay() bool {
	return os.Getenv("DISPLAY") != "" || os.Getenv("WAYLAND_DISPLAY") != ""
}
