// Command banger-agent is banger's guest agent. It runs inside every guest
// (installed by the image builder as /usr/local/bin/banger-agent, started by
// systemd through a udev rule) and answers the host's health, exec, pty,
// dial, clock and identity requests over virtio-serial and/or vsock. Build
// it static:
//
//	CGO_ENABLED=0 go build -o bin/banger-agent ./cmd/banger-agent
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"banger/internal/agent"
	"banger/internal/buildinfo"
)

const (
	defaultSerialPath = "/dev/virtio-ports/org.banger.agent"
	defaultVsockPort  = 1024
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "banger-agent:", err)
		os.Exit(1)
	}
}

// channel is one way of reaching the host.
type channel struct {
	name  string
	serve func(ctx context.Context) error
}

func run(args []string) error {
	fs := flag.NewFlagSet("banger-agent", flag.ContinueOnError)
	serial := fs.String("serial", "", "serve the virtio-serial port at `PATH` (default: "+defaultSerialPath+" if present)")
	vsockPort := fs.Uint("vsock-port", 0, "serve AF_VSOCK `PORT` (default: 1024 if /dev/vsock is present)")
	listenUnix := fs.String("listen-unix", "", "serve a unix socket at `PATH` (for tests)")
	debug := fs.Bool("debug", false, "log at debug level")
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *version {
		fmt.Println(buildinfo.String())
		return nil
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	srv := agent.NewServer(log, buildinfo.String())

	chans, err := pickChannels(srv, *serial, *vsockPort, *listenUnix)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log.Info("banger-agent starting", "version", buildinfo.String(), "channels", len(chans))
	return serveAll(ctx, log, chans)
}

// pickChannels honours explicit flags; without any it serves the serial
// port and/or vsock, whichever exist.
func pickChannels(srv *agent.Server, serial string, vsockPort uint, listenUnix string) ([]channel, error) {
	if vsockPort > 1<<32-1 {
		return nil, fmt.Errorf("--vsock-port %d out of range", vsockPort)
	}
	var chans []channel
	if serial != "" {
		chans = append(chans, serialChannel(srv, serial))
	}
	if vsockPort != 0 {
		chans = append(chans, vsockChannel(srv, uint32(vsockPort)))
	}
	if listenUnix != "" {
		chans = append(chans, channel{"unix " + listenUnix, func(ctx context.Context) error {
			os.Remove(listenUnix)
			l, err := net.Listen("unix", listenUnix)
			if err != nil {
				return err
			}
			defer os.Remove(listenUnix)
			return srv.ServeListener(ctx, l)
		}})
	}
	if len(chans) > 0 {
		return chans, nil
	}
	if _, err := os.Stat(defaultSerialPath); err == nil {
		chans = append(chans, serialChannel(srv, defaultSerialPath))
	}
	if _, err := os.Stat("/dev/vsock"); err == nil {
		chans = append(chans, vsockChannel(srv, defaultVsockPort))
	}
	if len(chans) == 0 {
		return nil, errors.New("no agent channel: neither " + defaultSerialPath + " nor /dev/vsock exists " +
			"(give the VM a virtserialport named org.banger.agent or a vsock device, or pass --serial/--vsock-port/--listen-unix)")
	}
	return chans, nil
}

func serialChannel(srv *agent.Server, path string) channel {
	return channel{"serial " + path, func(ctx context.Context) error { return srv.ServeSerial(ctx, path) }}
}

func vsockChannel(srv *agent.Server, port uint32) channel {
	return channel{fmt.Sprintf("vsock port %d", port), func(ctx context.Context) error { return srv.ServeVsock(ctx, port) }}
}

// serveAll runs every channel until ctx ends. A failing channel is logged
// and the others keep serving; only when every channel has stopped does the
// agent exit, with the first error (systemd then restarts it).
func serveAll(ctx context.Context, log *slog.Logger, chans []channel) error {
	errs := make(chan error, len(chans))
	for _, c := range chans {
		go func() {
			err := c.serve(ctx)
			if err != nil && ctx.Err() == nil {
				err = fmt.Errorf("%s: %w", c.name, err)
				log.Error("agent channel failed", "channel", c.name, "err", err)
			} else {
				err = nil
			}
			errs <- err
		}()
	}
	var first error
	for range chans {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}
