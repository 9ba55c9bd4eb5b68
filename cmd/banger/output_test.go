package main

import (
	"bytes"
	"errors"
	"fmt"
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
