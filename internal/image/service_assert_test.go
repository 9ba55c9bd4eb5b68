package image_test

import (
	"banger/internal/daemon"
	"banger/internal/image"
)

// Service lives below the daemon (no import of it), so the interface
// assertion is made here.
var _ daemon.ImageService = (*image.Service)(nil)
