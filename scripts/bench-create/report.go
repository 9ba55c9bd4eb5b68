package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"sort"
	"time"

	"golang.org/x/crypto/ssh"

	"banger/internal/api"
	"banger/internal/config"
)

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// msOf is ms (the name stats.go reads better with).
func msOf(d time.Duration) float64 { return ms(d) }

// summarize returns min/p50/p95/max (nearest-rank percentiles).
func summarize(v []float64) Summary {
	if len(v) == 0 {
		return Summary{}
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	rank := func(p float64) float64 {
		i := int(p*float64(len(s))+0.999999) - 1
		if i < 0 {
			i = 0
		}
		if i >= len(s) {
			i = len(s) - 1
		}
		return s[i]
	}
	return Summary{Min: s[0], P50: rank(0.50), P95: rank(0.95), Max: s[len(s)-1], N: len(s)}
}

func printTable(r *Result) {
	accel := r.Accel
	if accel == "tcg" {
		accel = "tcg (software emulation — not comparable with KVM hosts)"
	}
	mode := ""
	if r.NoBoot {
		mode = " (--no-boot: host side only, guests killed before they boot)"
	}
	fmt.Printf("bench-create on %s: engine %s, accel %s, disk %s, %d runs%s\n\n", r.Host, r.Engine, accel, r.DiskDriver, r.Runs, mode)
	fmt.Printf("%-28s %10s %10s %10s\n", "measure", "p50", "p95", "max")
	row := func(name string, s Summary) {
		fmt.Printf("%-28s %10s %10s %10s\n", name, fmtMS(s.P50), fmtMS(s.P95), fmtMS(s.Max))
	}
	for _, st := range r.StageOrder {
		row("  stage: "+st, r.Stages[st])
	}
	row("host overhead (→ engine)", r.HostOverhead)
	if r.NoBoot {
		row("create → engine started", r.CreateReady)
	} else {
		row("create → agent ready", r.CreateReady)
	}
	if r.CreateSSH.N > 0 {
		row("create → ssh", r.CreateSSH)
	}
	row("delete", r.Delete)
}

func fmtMS(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.2fs", v/1000)
	}
	return fmt.Sprintf("%.1fms", v)
}

// waitSSH dials the guest's sshd with banger's key until a command runs.
func waitSSH(ctx context.Context, cfg config.Config, v api.VM, timeout time.Duration) error {
	key, err := os.ReadFile(cfg.KeyPath())
	if err != nil {
		return err
	}
	signer, err := ssh.ParsePrivateKey(key)
	if err != nil {
		return err
	}
	conf := &ssh.ClientConfig{User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		// A fresh guest's host key is unknown by definition; the bench only times the handshake.
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		cl, err := ssh.Dial("tcp", net.JoinHostPort(v.Runtime.GuestIP, "22"), conf)
		if err == nil {
			s, err := cl.NewSession()
			if err == nil {
				err = s.Run("true")
				s.Close()
			}
			cl.Close()
			if err == nil {
				return nil
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("no ssh within %s: %v", timeout, last)
}
