package agent

import (
	"bytes"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// TestPumpLateAfterExit is the race TestExecConcurrent once hit under load
// (`exec 2 = 2, "", "err2\n"`): the command wrote its output and exited, the
// drain deadline was set, and the stdout pump only ran after it had passed.
// A read past its deadline fails without looking at the pipe, so the output
// still in the pipe was lost. Here the deadline is already past when the pump
// starts; everything written must still reach the stream.
func TestPumpLateAfterExit(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	want := bytes.Repeat([]byte("out\n"), 10_000) // 40 KiB: more than one chunk
	if _, err := w.Write(want); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := r.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	var exitedAt atomic.Int64
	exitedAt.Store(time.Now().UnixNano())
	var stream bytes.Buffer
	pump(output{r, frameStdout}, &frameWriter{w: &stream}, &exitedAt)

	var got []byte
	for stream.Len() > 0 {
		ft, payload, err := readFrame(&stream)
		if err != nil {
			t.Fatal(err)
		}
		if ft != frameStdout {
			t.Fatalf("frame type %d, want stdout", ft)
		}
		got = append(got, payload...)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("the pump sent %d of the %d bytes the command wrote before it exited", len(got), len(want))
	}
}
