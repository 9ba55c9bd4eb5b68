package agent

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hashicorp/yamux"
)

// sessionConfig is the yamux configuration of both ends: keepalives every
// 30 s (a peer silent for 30 s more ends the session), no stream-open
// timeout (a guest still booting acks late; requests are bounded by their
// contexts instead) and a minute for half-closed streams.
func sessionConfig(log *slog.Logger) *yamux.Config {
	cfg := yamux.DefaultConfig()
	cfg.EnableKeepAlive = true
	cfg.KeepAliveInterval = 30 * time.Second
	cfg.ConnectionWriteTimeout = 30 * time.Second
	cfg.StreamOpenTimeout = 0
	cfg.StreamCloseTimeout = time.Minute
	cfg.LogOutput = nil
	cfg.Logger = yamuxLogger{log}
	return cfg
}

// yamuxLogger sends yamux's "[ERR] …" lines to slog at warn level and its
// "[WARN] …" lines (routine races at stream and session close) at debug.
type yamuxLogger struct{ log *slog.Logger }

func (l yamuxLogger) Print(v ...any)                 { l.emit(fmt.Sprint(v...)) }
func (l yamuxLogger) Println(v ...any)               { l.emit(fmt.Sprint(v...)) }
func (l yamuxLogger) Printf(format string, v ...any) { l.emit(fmt.Sprintf(format, v...)) }

func (l yamuxLogger) emit(msg string) {
	level := slog.LevelDebug
	if strings.HasPrefix(msg, "[ERR]") {
		level = slog.LevelWarn
	}
	l.log.Log(context.Background(), level, "yamux", "detail", strings.TrimSpace(msg))
}
