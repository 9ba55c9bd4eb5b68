package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"banger/internal/api"
	"banger/internal/logcap"
)

// logCapEvery is how often capLogs runs (StartStats): a log grows past its
// cap by at most what the guest writes in this long.
var logCapEvery = time.Second

// capLogs keeps every VM's serial and engine log under its cap
// (serial_log_max, engine_log_max). The engines write those files
// themselves and outlive the daemon, so they are capped by polling (see
// internal/logcap); a restarted daemon resumes from the VM records.
func (m *Manager) capLogs(ctx context.Context) {
	vms, err := m.st.ListVMs(ctx)
	if err != nil {
		return
	}
	for _, v := range vms {
		for _, l := range []struct {
			path string
			max  int64
		}{{v.Runtime.SerialLogPath, int64(m.cfg.SerialLogMax)}, {v.Runtime.EngineLogPath, int64(m.cfg.EngineLogMax)}} {
			if l.path == "" {
				continue
			}
			if rotated, err := logcap.Cap(l.path, l.max); err != nil {
				m.log.Warn("capping a vm log", "vm", v.Name, "err", err)
			} else if rotated {
				m.log.Debug("vm log rotated", "vm", v.Name, "path", l.path, "max", l.max)
			}
		}
	}
}

// Logs writes the VM's serial console to w — from its last opt.Tail lines
// when set, found from the log's end (logcap.TailStart) without reading the
// rest; with opt.Follow it keeps writing new output until ctx ends or the
// VM is deleted.
func (m *Manager) Logs(ctx context.Context, name string, opt api.LogOptions, w io.Writer) error {
	follow := opt.Follow
	v, err := m.getVM(ctx, name)
	if err != nil {
		return err
	}
	f, err := os.Open(v.Runtime.SerialLogPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && !follow {
			return nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if f != nil && opt.Tail > 0 {
		if err := seekTail(f, opt.Tail); err != nil {
			f.Close()
			return err
		}
	}
	buf := make([]byte, 32<<10)
	for {
		if f != nil {
			n, rerr := f.Read(buf)
			if n > 0 {
				if _, err := w.Write(buf[:n]); err != nil {
					f.Close()
					return err
				}
				if fl, ok := w.(interface{ Flush() }); ok {
					fl.Flush()
				}
				continue
			}
			if rerr != nil && rerr != io.EOF {
				f.Close()
				return rerr
			}
		}
		if !follow {
			if f != nil {
				f.Close()
			}
			return nil
		}
		select {
		case <-ctx.Done():
			if f != nil {
				f.Close()
			}
			return nil
		case <-time.After(200 * time.Millisecond):
		}
		if _, err := m.st.GetVM(ctx, v.ID); api.IsNotFound(err) {
			if f != nil {
				f.Close()
			}
			return nil
		}
		if f == nil {
			f, _ = os.Open(v.Runtime.SerialLogPath)
		} else if fi, err := os.Stat(v.Runtime.SerialLogPath); err == nil {
			// the log is recreated on each boot: reopen when it shrank
			if pos, _ := f.Seek(0, io.SeekCurrent); fi.Size() < pos {
				f.Close()
				f, _ = os.Open(v.Runtime.SerialLogPath)
			}
		}
	}
}

// seekTail moves f to the start of its last n lines.
func seekTail(f *os.File, n int) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	off, err := logcap.TailStart(f, fi.Size(), n, api.MaxLogTailBytes)
	if err != nil {
		return fmt.Errorf("finding the last %d lines of %s: %w", n, f.Name(), err)
	}
	_, err = f.Seek(off, io.SeekStart)
	return err
}
