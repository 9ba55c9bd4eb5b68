package attack

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"banger/internal/agent"
)

// yamux framing (github.com/hashicorp/yamux spec.md): a 12-byte header,
// version 0, type, flags, stream id, length.
const (
	typeData, typeWindowUpdate = 0, 1
	flagSYN, flagACK, flagFIN  = 1, 2, 4
)

type frame struct {
	typ   byte
	flags uint16
	id    uint32
	body  []byte
}

func writeFrame(w io.Writer, f frame) error {
	hdr := make([]byte, 12, 12+len(f.body))
	hdr[1] = f.typ
	binary.BigEndian.PutUint16(hdr[2:], f.flags)
	binary.BigEndian.PutUint32(hdr[4:], f.id)
	binary.BigEndian.PutUint32(hdr[8:], uint32(len(f.body)))
	_, err := w.Write(append(hdr, f.body...))
	return err
}

// hostileGuest is the guest end of an agent channel written frame by frame,
// so that it obeys none of yamux's manners: it opens streams towards the
// host whatever the host says (a GoAway included), fills each with 200 KiB
// (under the 256 KiB window) and opens the next without waiting for an
// answer. It still answers the host's own streams like the real agent
// (health), so the host's session can be checked afterwards.
func hostileGuest(t *testing.T, conn net.Conn, streams int) (done chan int) {
	t.Helper()
	var wmu sync.Mutex
	send := func(f frame) error {
		wmu.Lock()
		defer wmu.Unlock()
		return writeFrame(conn, f)
	}
	go func() { // answer the host
		r := bufio.NewReader(conn)
		hdr := make([]byte, 12)
		for {
			if _, err := io.ReadFull(r, hdr); err != nil {
				return
			}
			f := frame{typ: hdr[1], flags: binary.BigEndian.Uint16(hdr[2:]), id: binary.BigEndian.Uint32(hdr[4:])}
			n := binary.BigEndian.Uint32(hdr[8:])
			if f.typ == typeData {
				f.body = make([]byte, n)
				if _, err := io.ReadFull(r, f.body); err != nil {
					return
				}
			}
			switch {
			case f.id%2 == 1 && f.flags&flagSYN != 0: // a host stream opens
				go send(frame{typ: typeWindowUpdate, flags: flagACK, id: f.id})
			}
			if f.typ == typeData && f.id%2 == 1 && len(f.body) > 0 && f.body[len(f.body)-1] == '\n' {
				b, _ := json.Marshal(agent.Health{OK: true, Version: "hostile"})
				go send(frame{typ: typeData, flags: flagFIN, id: f.id, body: append(b, '\n')})
			}
		}
	}()
	done = make(chan int, 1)
	go func() { // the flood
		chunk := make([]byte, 200<<10)
		n := 0
		for i := 0; i < streams; i++ {
			if send(frame{typ: typeData, flags: flagSYN, id: uint32(2 + 2*i), body: chunk}) != nil {
				break
			}
			n++
		}
		done <- n
	}()
	return done
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestAttackGuestOpensStreams: the guest opens 1000 streams on the agent
// session and writes 200 KiB into each. The host never asked for them: it
// must not keep them (backlog × window would pin ~50 MiB per VM), and its
// own requests must still work afterwards.
func TestAttackGuestOpensStreams(t *testing.T) {
	hostEnd, guestEnd := net.Pipe()
	defer guestEnd.Close()
	before := heapInUse()
	c, err := agent.NewClient(hostEnd)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := hostileGuest(t, guestEnd, 1000)
	select {
	case n := <-done:
		if n != 1000 {
			t.Fatalf("the host stopped reading after %d streams", n)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the guest's stream flood did not finish")
	}
	const bound = 16 << 20
	if grew := int64(heapInUse()) - int64(before); grew > bound {
		t.Errorf("host heap grew by %d MiB after the guest's streams, want < %d MiB", grew>>20, bound>>20)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := c.Health(ctx)
	if err != nil || !h.OK {
		t.Fatalf("the host session is not usable after the flood: %+v %v", h, err)
	}
}
