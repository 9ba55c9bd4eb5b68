package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/client"
)

// durationFlag is a --ttl / --idle-stop value: a Go duration ("90s",
// "2h30m"), a number of days ("7d"), or "0"/"none" (clear, on vm lifetime).
type durationFlag struct {
	d   time.Duration
	set bool
}

func (f *durationFlag) String() string {
	if !f.set {
		return ""
	}
	return f.d.String()
}

func (f *durationFlag) Set(v string) error {
	v = strings.TrimSpace(v)
	switch {
	case v == "none" || v == "0":
		f.d = 0
	case strings.HasSuffix(v, "d"):
		n, err := strconv.ParseFloat(strings.TrimSuffix(v, "d"), 64)
		if err != nil || n < 0 {
			return fmt.Errorf("invalid duration %q: use e.g. 90s, 30m, 2h or 7d", v)
		}
		f.d = time.Duration(n * 24 * float64(time.Hour))
	default:
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("invalid duration %q: use e.g. 90s, 30m, 2h or 7d", v)
		}
		f.d = d
	}
	if f.d > 0 && f.d < time.Second {
		return fmt.Errorf("duration %q is under a second", v)
	}
	f.set = true
	return nil
}

func (f *durationFlag) Type() string { return "duration" }

// seconds rounds up to whole seconds (the API's unit).
func (f *durationFlag) seconds() int64 { return int64((f.d + time.Second - 1) / time.Second) }

// lifetimeFlags are --ttl, --ttl-action and --idle-stop of create, run and
// lifetime.
type lifetimeFlags struct {
	ttl, idle durationFlag
	action    string
}

func (l *lifetimeFlags) register(cmd *cobra.Command) {
	cmd.Flags().Var(&l.ttl, "ttl", "delete the VM (or stop it, --ttl-action stop) this long from now, e.g. 2h or 7d")
	cmd.Flags().StringVar(&l.action, "ttl-action", "", "what the end of --ttl does: delete (default) or stop")
	cmd.Flags().Var(&l.idle, "idle-stop", "stop the VM after this long without exec, terminal, port-forward, network or CPU activity, e.g. 30m")
}

func (l *lifetimeFlags) apply(req *api.VMCreateRequest) {
	req.TTLSeconds, req.TTLAction, req.IdleStopSeconds = l.ttl.seconds(), l.action, l.idle.seconds()
}

func vmLifetimeCmd(e *env) *cobra.Command {
	var l lifetimeFlags
	cmd := &cobra.Command{
		Use:   "lifetime NAME [--ttl D|none] [--ttl-action delete|stop] [--idle-stop D|none]",
		Short: "Show or change when the daemon deletes or stops a VM on its own",
		Long: "Show or change a VM's TTL and idle-stop, running or not. A new --ttl counts from now;\n" +
			"none (or 0) clears it. The daemon keeps them across restarts.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var req api.VMLifetimeRequest
			if l.ttl.set {
				s := l.ttl.seconds()
				req.TTLSeconds = &s
			}
			if l.idle.set {
				s := l.idle.seconds()
				req.IdleStopSeconds = &s
			}
			req.TTLAction = l.action
			if req == (api.VMLifetimeRequest{}) {
				return show(ctx, e, func(c *client.Client) (api.VM, error) {
					d, err := c.GetVM(ctx, args[0])
					return d.VM, err
				}, lifetimeFields)
			}
			return show(ctx, e, func(c *client.Client) (api.VM, error) { return c.SetVMLifetime(ctx, args[0], req) }, lifetimeFields)
		},
	}
	l.register(cmd)
	return cmd
}

func lifetimeFields(w io.Writer, vm api.VM) {
	kv := [][2]string{{"name", vm.Name}, {"ttl", ttlLeft(vm.Lifetime, time.Now())}, {"idle-stop", idleStop(vm.Lifetime)}}
	if vm.Lifetime != nil && vm.Lifetime.Run {
		kv = append(kv, [2]string{"owned by", "a vm run (deleted when it ends)"})
	}
	if kv[1][1] == "" && kv[2][1] == "" && len(kv) == 3 {
		kv = append(kv, [2]string{"lifetime", "none: the VM stays until deleted"})
	}
	fields(w, kv)
}

// ttlLeft says how long a TTL has left and what it does ("" when none).
func ttlLeft(lt *api.VMLifetime, now time.Time) string {
	if lt == nil || lt.ExpiresAt.IsZero() {
		return ""
	}
	action := lt.TTLAction
	if action == "" {
		action = api.TTLDelete
	}
	left := lt.ExpiresAt.Sub(now).Round(time.Second)
	if left <= 0 {
		return fmt.Sprintf("%s now (ended %s)", action, lt.ExpiresAt.Local().Format(time.RFC3339))
	}
	return fmt.Sprintf("%s in %s (at %s)", action, left, lt.ExpiresAt.Local().Format(time.RFC3339))
}

func idleStop(lt *api.VMLifetime) string {
	if lt == nil || lt.IdleStop <= 0 {
		return ""
	}
	return "after " + lt.IdleStop.String() + " idle"
}

// lifetimeCell is vm list's LIFETIME column.
func lifetimeCell(lt *api.VMLifetime, now time.Time) string {
	var parts []string
	if lt != nil && !lt.ExpiresAt.IsZero() {
		left := max(0, lt.ExpiresAt.Sub(now).Round(time.Second))
		parts = append(parts, fmt.Sprintf("%s %s", lt.TTLAction, left))
	}
	if lt != nil && lt.IdleStop > 0 {
		parts = append(parts, "idle "+lt.IdleStop.String())
	}
	if lt != nil && lt.Run {
		parts = append(parts, "run")
	}
	return orDash(strings.Join(parts, ", "))
}
