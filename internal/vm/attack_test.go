package vm

import (
	"context"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
)

// floodLog stands in for an engine writing a guest's console: it opens path
// for appending, as QEMU's file chardev and the engines' stdout do, and
// writes rate bytes a second until ctx ends. It reports the largest size
// the file reached.
func floodLog(ctx context.Context, t *testing.T, path string, rate int) <-chan int64 {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	largest := make(chan int64, 1)
	go func() {
		defer f.Close()
		chunk := []byte(strings.Repeat("guest output without end\n", 2600))[:64<<10]
		tick := time.NewTicker(time.Second * time.Duration(len(chunk)) / time.Duration(rate))
		defer tick.Stop()
		var most int64
		for {
			f.Write(chunk)
			if fi, err := f.Stat(); err == nil && fi.Size() > most {
				most = fi.Size()
			}
			select {
			case <-ctx.Done():
				largest <- most
				return
			case <-tick.C:
			}
		}
	}()
	return largest
}

// TestAttackSerialLogFlood: a guest writes its console without end (and
// makes its engine log too) while the daemon's loops run. Both logs stay
// under their cap plus one poll interval's worth of output, and the older
// copy ".1" under the cap plus what was appended while copying.
func TestAttackSerialLogFlood(t *testing.T) {
	f := newFixture(t)
	f.m.cfg.SerialLogMax, f.m.cfg.EngineLogMax = 1<<20, 1<<20
	defer func(d time.Duration) { logCapEvery = d }(logCapEvery)
	logCapEvery = 100 * time.Millisecond
	v, _ := f.stoppedVM(t, "flood")
	const rate = 4 << 20 // bytes a second: more than a serial port manages
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.m.StartStats(ctx)
	defer f.m.Close()
	fctx, stop := context.WithTimeout(ctx, 3*time.Second)
	defer stop()
	serial := floodLog(fctx, t, v.Runtime.SerialLogPath, rate)
	engine := floodLog(fctx, t, v.Runtime.EngineLogPath, rate)
	// cap + a second's output (a poll every 100 ms, late by up to 0.9 s on
	// a loaded host) + a write; without the cap it reaches 12 MiB.
	const bound = 1<<20 + rate + 64<<10
	for what, ch := range map[string]<-chan int64{"serial": serial, "engine": engine} {
		if most := <-ch; most > bound {
			t.Errorf("the %s log reached %d KiB, want <= %d KiB", what, most>>10, bound>>10)
		}
	}
	for _, p := range []string{v.Runtime.SerialLogPath, v.Runtime.EngineLogPath} {
		if fi, err := os.Stat(p + ".1"); err != nil {
			t.Errorf("no rotated copy: %v", err)
		} else if fi.Size() > bound {
			t.Errorf("%s.1 holds %d KiB, want <= %d KiB", p, fi.Size()>>10, bound>>10)
		}
	}
}

// TestAttackDiagnosticsTail: diagnostics of a VM whose console log is
// 100 MiB read only its end.
func TestAttackDiagnosticsTail(t *testing.T) {
	dir := t.TempDir()
	serial := dir + "/serial.log"
	fh, err := os.Create(serial)
	if err != nil {
		t.Fatal(err)
	}
	fh.Truncate(100 << 20) // sparse: 100 MiB of NULs, then lines
	fh.WriteAt([]byte("last words\nof the guest\n"), 100<<20)
	fh.Close()
	v := api.VM{Name: "big", Runtime: api.VMRuntime{SerialLogPath: serial, EngineLogPath: serial}}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	d := (&Manager{}).Diagnostics(v, nil)
	runtime.ReadMemStats(&after)
	if !strings.Contains(d, "of the guest") {
		t.Fatalf("diagnostics lack the log's end:\n%s", d)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Errorf("diagnostics of a 100 MiB log allocated %d MiB, want < 4 MiB", alloc>>20)
	}
}
