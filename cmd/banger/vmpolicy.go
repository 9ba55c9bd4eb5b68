package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/client"
)

func vmPolicyCmd(e *env) *cobra.Command {
	var mode string
	var allow []string
	cmd := &cobra.Command{
		Use:   "policy NAME",
		Short: "Show or set a VM's network egress policy (live when it runs)",
		Long: `Without flags, show the VM's egress policy and how many packets it denied.

  --mode internet   the internet, but nothing of the host's world (default)
  --mode none       no egress; banger's DNS still answers .vm names
  --allow ENTRY     only these (repeat or comma-separate): a CIDR or IP with
                    an optional :port (10.1.0.0/16, 192.0.2.7:443), or a domain
                    name (example.com, *.example.com) whose addresses become
                    reachable once the VM resolves it through banger's DNS`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, name := cmd.Context(), args[0]
			if !cmd.Flags().Changed("mode") && !cmd.Flags().Changed("allow") {
				return show(ctx, e, func(c *client.Client) (api.NetStatus, error) { return c.NetPolicy(ctx, name) }, netStatusFields)
			}
			p := api.NetPolicy{Mode: mode, Allow: allow}
			if p.Mode == "" && cmd.Flags().Changed("allow") {
				p.Mode = api.NetAllow
			}
			return show(ctx, e, func(c *client.Client) (api.NetStatus, error) { return c.SetNetPolicy(ctx, name, p) }, netStatusFields)
		},
	}
	cmd.Flags().StringVar(&mode, "mode", "", "internet, none or allow")
	cmd.Flags().StringSliceVar(&allow, "allow", nil, "allowed CIDR[:port], IP[:port] or domain name (implies --mode allow)")
	return cmd
}

func netStatusFields(w io.Writer, st api.NetStatus) {
	fields(w, netStatusKV(st))
}

func netStatusKV(st api.NetStatus) [][2]string {
	kv := [][2]string{{"network policy", st.Policy.Mode}}
	if len(st.Policy.Allow) > 0 {
		kv = append(kv, [2]string{"allowed", strings.Join(st.Policy.Allow, " ")})
	}
	if st.Applied {
		kv = append(kv, [2]string{"denied packets", fmt.Sprint(st.Denied)})
	} else {
		kv = append(kv, [2]string{"denied packets", "- (not running; applies at start)"})
	}
	return kv
}

// netPolicyFlags are vm create's --net-mode and --net-allow.
type netPolicyFlags struct {
	mode  string
	allow []string
}

func (f *netPolicyFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.mode, "net-mode", "", "egress policy: internet, none or allow (default from config; see vm policy)")
	cmd.Flags().StringSliceVar(&f.allow, "net-allow", nil, "allowed CIDR[:port], IP[:port] or domain name (implies --net-mode allow)")
}

// policy returns the flags' policy, nil when neither was given.
func (f *netPolicyFlags) policy() *api.NetPolicy {
	if f.mode == "" && len(f.allow) == 0 {
		return nil
	}
	p := api.NetPolicy{Mode: f.mode, Allow: f.allow}
	if p.Mode == "" {
		p.Mode = api.NetAllow
	}
	return &p
}
