package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
)

func TestStageLine(t *testing.T) {
	tests := []struct {
		stage api.Stage
		want  string
	}{
		{api.Stage{Name: "allocate", Duration: 12 * time.Millisecond, Outcome: api.StageOK},
			"  ✓ allocate        12ms"},
		{api.Stage{Name: "network", Duration: 340 * time.Millisecond, Outcome: api.StageOK, Detail: "reused tap-pool-3"},
			"  ✓ network         340ms  reused tap-pool-3"},
		{api.Stage{Name: "boot", Duration: 2100 * time.Millisecond, Outcome: api.StageFailed, Detail: "guest did not answer"},
			"  ✗ boot            2.1s: guest did not answer"},
		{api.Stage{Name: "debootstrap", Duration: 95 * time.Second, Outcome: api.StageOK},
			"  ✓ debootstrap     1m35s"},
		{api.Stage{Name: "pool", Outcome: api.StageSkipped, Detail: "reflink works"},
			"  - pool            skipped (reflink works)"},
	}
	for _, tt := range tests {
		if got := stageLine(tt.stage); got != tt.want {
			t.Errorf("stageLine(%s)\n got %q\nwant %q", tt.stage.Name, got, tt.want)
		}
	}
}

func TestStagePrinterPrintsEachFinishedStageOnce(t *testing.T) {
	var buf bytes.Buffer
	p := newStagePrinter(&buf)
	op := api.Operation{Stages: []api.Stage{
		{Name: "a", Outcome: api.StageOK, Duration: time.Millisecond},
		{Name: "b", Outcome: api.StageRunning},
	}}
	p.update(op)
	op.Stages[1].Outcome, op.Stages[1].Duration = api.StageOK, 2*time.Millisecond
	p.update(op)
	p.update(op)
	want := "  ✓ a               1ms\n  ✓ b               2ms\n"
	if buf.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", buf.String(), want)
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0B", 512: "512B", 1536: "1.5KiB", 2 << 30: "2.0GiB", 8 << 40: "8.0TiB"} {
		if got := formatSize(n); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestVMTable(t *testing.T) {
	var buf bytes.Buffer
	vmTable(&buf, []api.VM{
		{Name: "brave-otter", ImageName: "debian", VCPUs: 2, MemoryMiB: 1024, DiskBytes: 8 << 30,
			Runtime: api.VMRuntime{State: api.VMRunning, GuestIP: "10.203.0.2", Engine: "qemu"}},
		{Name: "x", VCPUs: 1, MemoryMiB: 512, DiskBytes: 1 << 30, Runtime: api.VMRuntime{State: api.VMStopped}},
	})
	want := "" +
		"NAME         STATE    IMAGE   IP          VCPUS  MEMORY    DISK    ENGINE\n" +
		"brave-otter  running  debian  10.203.0.2  2      1.0GiB    8.0GiB  qemu\n" +
		"x            stopped  -       -           1      512.0MiB  1.0GiB  -\n"
	if buf.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", buf.String(), want)
	}
}

func TestVMTableLifetime(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	vmTableAt(&buf, []api.VM{
		{Name: "a", Runtime: api.VMRuntime{State: api.VMRunning},
			Lifetime: &api.VMLifetime{ExpiresAt: now.Add(90 * time.Minute), TTLAction: api.TTLStop, IdleStop: 10 * time.Minute}},
		{Name: "b", Runtime: api.VMRuntime{State: api.VMRunning}, Lifetime: &api.VMLifetime{Run: true}},
		{Name: "c", Runtime: api.VMRuntime{State: api.VMStopped}},
	}, now)
	for _, want := range []string{"LIFETIME", "stop 1h30m0s, idle 10m0s", "run"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("vm list lacks %q:\n%s", want, buf.String())
		}
	}
	if got := ttlLeft(&api.VMLifetime{ExpiresAt: now.Add(-time.Second), TTLAction: api.TTLDelete}, now); !strings.HasPrefix(got, "delete now") {
		t.Errorf("ttlLeft of an ended ttl = %q", got)
	}
}

func TestDurationFlag(t *testing.T) {
	for in, want := range map[string]time.Duration{"90s": 90 * time.Second, "2h": 2 * time.Hour, "7d": 7 * 24 * time.Hour,
		"none": 0, "0": 0, "1.5d": 36 * time.Hour} {
		var f durationFlag
		if err := f.Set(in); err != nil || f.d != want || !f.set {
			t.Errorf("Set(%q) = %v, %v", in, f.d, err)
		}
	}
	for _, in := range []string{"", "-5m", "xd", "soon", "10ms"} {
		var f durationFlag
		if err := f.Set(in); err == nil {
			t.Errorf("Set(%q) accepted: %v", in, f.d)
		}
	}
}

func TestPrintChecks(t *testing.T) {
	var buf bytes.Buffer
	printChecks(&buf, api.DoctorReport{Checks: []api.Check{
		{Name: "kvm", Status: api.CheckOK, Detail: "/dev/kvm usable"},
		{Name: "firecracker", Status: api.CheckFail, Detail: "not found", Fix: "install firecracker"},
	}})
	want := "ok    kvm          /dev/kvm usable\nfail  firecracker  not found\n      fix: install firecracker\n"
	if buf.String() != want {
		t.Fatalf("got\n%q\nwant\n%q", buf.String(), want)
	}
}

func TestPrintError(t *testing.T) {
	var buf bytes.Buffer
	printError(&buf, api.NotFound("vm %q not found", "a").WithFix("banger vm list"))
	printError(&buf, errors.New("plain"))
	printError(&buf, fmt.Errorf("starting: %w", api.FailedPrecondition("vm %q is stopped", "my vm").
		WithFix("start it first").WithAction("vm start", "my vm")))
	printError(&buf, api.Unavailable("daemon down").WithAction("daemon start"))
	want := "banger: vm \"a\" not found\n  fix: banger vm list\nbanger: plain\n" +
		"banger: starting: vm \"my vm\" is stopped\n  fix: start it first: banger vm start 'my vm'\n" +
		"banger: daemon down\n  fix: banger daemon start\n"
	if buf.String() != want {
		t.Fatalf("got %q", buf.String())
	}
}
