package vm

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"testing"

	"banger/internal/api"
)

func TestForwardTableMaxAndClose(t *testing.T) {
	var tbl forwardTable
	dial := func(context.Context) (net.Conn, error) { return nil, api.Unavailable("no agent") }
	req := api.ForwardRequest{HostAddr: "127.0.0.1", GuestPort: 80}
	var ports []int
	for i := 0; i < 2; i++ {
		f, err := tbl.add("a", req, dial, 2, slog.Default())
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, f.HostPort)
	}
	if _, err := tbl.add("b", req, dial, 2, slog.Default()); !api.IsFailedPrecondition(err) {
		t.Errorf("a third forward over max_forwards = 2: %v, want FailedPrecondition", err)
	}
	if got := tbl.list("a"); len(got) != 2 {
		t.Errorf("list: %+v", got)
	}
	tbl.closeVM("a")
	for _, p := range ports { // the listeners are gone
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", itoa(p)))
		if err != nil {
			t.Errorf("host port %d still held after closeVM: %v", p, err)
			continue
		}
		l.Close()
	}
	if got := tbl.list("a"); len(got) != 0 {
		t.Errorf("forwards left: %+v", got)
	}
}

func TestAddForwardRefusesStoppedAndMissingVMs(t *testing.T) {
	f := newFixture(t)
	f.stoppedVM(t, "s")
	ctx := context.Background()
	if _, err := f.m.AddForward(ctx, "s", api.ForwardRequest{GuestPort: 80}); !api.IsFailedPrecondition(err) {
		t.Errorf("forward to a stopped VM: %v, want FailedPrecondition", err)
	}
	if _, err := f.m.AddForward(ctx, "nope", api.ForwardRequest{GuestPort: 80}); !api.IsNotFound(err) {
		t.Errorf("forward to a missing VM: %v, want NotFound", err)
	}
	if err := f.m.RemoveForward(ctx, "s", 8080); !api.IsNotFound(err) {
		t.Errorf("removing a forward that does not exist: %v, want NotFound", err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
