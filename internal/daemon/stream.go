package daemon

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"

	"banger/internal/api"
)

// ExecUpgrade is the Upgrade token of POST /v1/vms/{name}/exec.
const ExecUpgrade = "banger-exec"

// flushWriter writes a streaming response, sending the 200 header on the
// first write and flushing after each one.
type flushWriter struct {
	w     http.ResponseWriter
	rc    *http.ResponseController
	wrote bool
}

func (f *flushWriter) Write(p []byte) (int, error) {
	if !f.wrote {
		f.wrote = true
		f.w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		f.w.WriteHeader(http.StatusOK)
	}
	n, err := f.w.Write(p)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}

func (d *Daemon) vmLogs(w http.ResponseWriter, r *http.Request) error {
	opt := api.LogOptions{Follow: queryBool(r, "follow")}
	if v := r.URL.Query().Get("tail"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > api.MaxLogTail {
			return api.Invalid("tail %q is not a line count from 0 to %d", v, api.MaxLogTail).WithFix("--tail 100")
		}
		opt.Tail = n
	}
	fw := &flushWriter{w: w, rc: http.NewResponseController(w)}
	err := d.vms.Logs(r.Context(), r.PathValue("name"), opt, fw)
	if fw.wrote {
		// The status is gone; the client sees the stream end.
		if err != nil && r.Context().Err() == nil {
			d.log.Warn("log stream ended", "vm", r.PathValue("name"), "err", err)
		}
		return nil
	}
	if err != nil && r.Context().Err() != nil {
		return nil
	}
	if err == nil {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
	}
	return err
}

// vmExec upgrades the connection and pipes it to the guest agent's stream.
func (d *Daemon) vmExec(w http.ResponseWriter, r *http.Request) error {
	stream, err := d.vms.Exec(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		_ = stream.Close()
		return api.Internal("hijacking exec connection: %w", err)
	}
	_, err = fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n%s: %s\r\n%s: %s\r\n\r\n",
		ExecUpgrade, api.VersionHeader, api.APIVersion, api.BuildHeader, d.opts.Version)
	if err == nil {
		err = brw.Flush()
	}
	if err != nil {
		_ = stream.Close()
		_ = conn.Close()
		d.log.Warn("exec upgrade failed", "vm", r.PathValue("name"), "err", err)
		return nil
	}
	pipe(r.Context(), conn, brw.Reader, stream)
	return nil
}

type closeWriter interface{ CloseWrite() error }

// pipe copies bytes both ways between a client connection (whose already
// buffered bytes are in buffered) and a guest stream. When the client stops
// sending, the stream is half-closed if it can be; when the guest stops
// sending (the command ended), the client is half-closed and both are closed.
// ctx ending (daemon shutdown) closes both.
func pipe(ctx context.Context, client net.Conn, buffered *bufio.Reader, stream net.Conn) {
	var once sync.Once
	closeBoth := func() { once.Do(func() { _ = client.Close(); _ = stream.Close() }) }
	stop := context.AfterFunc(ctx, closeBoth)
	defer stop()
	defer closeBoth()

	up := make(chan struct{})
	go func() {
		defer close(up)
		_, _ = io.Copy(stream, io.MultiReader(buffered, client))
		if cw, ok := stream.(closeWriter); ok {
			_ = cw.CloseWrite()
		}
	}()
	_, _ = io.Copy(client, stream)
	if cw, ok := client.(closeWriter); ok {
		_ = cw.CloseWrite()
	}
	// The guest side is done; nothing the client still sends can matter.
	closeBoth()
	<-up
}
