// Command build-test-image builds (or finds) the cached test image the test
// suite boots, printing stage timings to stderr and the image directory to
// stdout. Run it as root from the repository:
//
//	go run ./internal/testimage/cmd/build-test-image [-cache DIR] [-opencode]
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"banger/internal/testimage"
)

func main() {
	cache := flag.String("cache", testimage.CacheDir(), "cache directory (env "+testimage.EnvCacheDir+")")
	opencode := flag.Bool("opencode", false, "also build (or find) the opencode variant")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "build-test-image: needs root (debootstrap, chroot mounts): run it with sudo")
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	img, err := testimage.Ensure(ctx, *cache, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "build-test-image:", err)
		os.Exit(1)
	}
	fmt.Println(img.Dir)
	if *opencode {
		oc, err := testimage.EnsureOpencode(ctx, *cache, log)
		if err != nil {
			fmt.Fprintln(os.Stderr, "build-test-image: opencode variant:", err)
			os.Exit(1)
		}
		fmt.Println(oc.Dir)
	}
}
