// Package vmlinux turns a compressed x86 Linux kernel (a bzImage, what
// /boot/vmlinuz-* is) into the uncompressed ELF vmlinux that Firecracker
// boots, in pure Go: it reads the boot protocol's setup header to find the
// compressed payload, recognises the compression by its magic (gzip, xz,
// zstd, lz4 legacy, bzip2, lzma), inflates it and checks the result is a
// complete x86-64 ELF executable. When the header fields disagree with the
// payload it falls back to scanning for compression magics, like the kernel's
// scripts/extract-vmlinux.
package vmlinux

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

// MaxSize bounds the decompressed kernel: a real vmlinux is 20–80 MiB; the
// bound keeps a hostile payload from exhausting memory.
const MaxSize = 512 << 20

// Setup header offsets (Documentation/arch/x86/boot.rst).
const (
	offSetupSects    = 0x1f1
	offHeaderMagic   = 0x202
	offVersion       = 0x206
	offPayloadOffset = 0x248
	offPayloadLength = 0x24c
	minHeaderLen     = 0x250
	headerMagic      = "HdrS"
	// payload_offset/payload_length exist since boot protocol 2.08.
	minPayloadVersion = 0x0208
	// maxScanTries bounds the fallback scan per compression format.
	maxScanTries = 64
)

// format is one compression the kernel build may use.
type format struct {
	name    string
	magic   []byte
	inflate func(p []byte) ([]byte, error)
}

var formats = []format{
	{"gzip", []byte{0x1f, 0x8b, 0x08}, inflateGzip},
	{"xz", []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}, inflateXZ},
	{"zstd", []byte{0x28, 0xb5, 0x2f, 0xfd}, inflateZstd},
	{"lz4", []byte{0x02, 0x21, 0x4c, 0x18}, inflateLZ4Legacy},
	{"bzip2", []byte{'B', 'Z', 'h'}, inflateBzip2},
	{"lzma", []byte{0x5d, 0x00, 0x00}, inflateLZMA},
}

// IsBzImage reports whether b starts like a bzImage: the "HdrS" setup-header
// magic at 0x202.
func IsBzImage(b []byte) bool {
	return len(b) >= offHeaderMagic+4 && string(b[offHeaderMagic:offHeaderMagic+4]) == headerMagic
}

// IsELF reports whether b starts with the ELF magic.
func IsELF(b []byte) bool {
	return len(b) >= 4 && string(b[:4]) == elf.ELFMAG
}

// Extract returns the uncompressed ELF vmlinux inside bzImage. Errors say
// what is wrong with the input ("not a bzImage: missing HdrS magic").
func Extract(bzImage []byte) ([]byte, error) {
	payload, err := headerPayload(bzImage)
	if err != nil {
		return nil, err
	}
	var firstErr error
	if payload != nil {
		out, err := inflateAny(payload)
		if err == nil {
			return out, nil
		}
		firstErr = err
	}
	// The header fields disagree with the payload (or predate 2.08): scan
	// the whole image for a compressed stream that yields a valid ELF.
	if out, ok := scan(bzImage); ok {
		return out, nil
	}
	if firstErr != nil {
		return nil, fmt.Errorf("extracting vmlinux: %w", firstErr)
	}
	return nil, errors.New("extracting vmlinux: no compressed kernel found in the bzImage")
}

// headerPayload validates the setup header and returns the payload slice it
// describes, or nil when the header has no usable payload fields.
func headerPayload(b []byte) ([]byte, error) {
	if len(b) < minHeaderLen {
		return nil, fmt.Errorf("not a bzImage: %d bytes is too short for a setup header", len(b))
	}
	if !IsBzImage(b) {
		if IsELF(b) {
			return nil, errors.New("not a bzImage: this is already an ELF (an uncompressed vmlinux)")
		}
		return nil, errors.New("not a bzImage: missing HdrS magic at offset 0x202")
	}
	if binary.LittleEndian.Uint16(b[offVersion:]) < minPayloadVersion {
		return nil, nil
	}
	setupSects := int(b[offSetupSects])
	if setupSects == 0 {
		setupSects = 4
	}
	pmStart := (setupSects + 1) * 512
	off := int64(binary.LittleEndian.Uint32(b[offPayloadOffset:]))
	n := int64(binary.LittleEndian.Uint32(b[offPayloadLength:]))
	start := int64(pmStart) + off
	if n == 0 || start+n > int64(len(b)) {
		return nil, nil
	}
	return b[start : start+n], nil
}

// inflateAny picks the format by the payload's magic and inflates it.
func inflateAny(p []byte) ([]byte, error) {
	for _, f := range formats {
		if bytes.HasPrefix(p, f.magic) {
			out, err := f.inflate(p)
			if err != nil {
				return nil, fmt.Errorf("%s payload: %w", f.name, err)
			}
			if err := CheckELF(out); err != nil {
				return nil, fmt.Errorf("%s payload: %w", f.name, err)
			}
			return out, nil
		}
	}
	n := min(len(p), 6)
	return nil, fmt.Errorf("unknown payload compression (magic % x)", p[:n])
}

// scan tries every occurrence of every compression magic, like
// scripts/extract-vmlinux.
func scan(b []byte) ([]byte, bool) {
	for _, f := range formats {
		rest, base := b, 0
		for tries := 0; tries < maxScanTries; tries++ {
			i := bytes.Index(rest, f.magic)
			if i < 0 {
				break
			}
			pos := base + i
			if out, err := f.inflate(b[pos:]); err == nil && CheckELF(out) == nil {
				return out, true
			}
			rest, base = b[pos+1:], pos+1
		}
	}
	return nil, false
}

// CheckELF verifies b is a complete 64-bit x86-64 executable ELF: header
// fields, and every program header and loadable segment inside b (so a
// truncated decompression is caught).
func CheckELF(b []byte) error {
	if !IsELF(b) {
		return errors.New("decompressed kernel is not an ELF (bad magic)")
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("decompressed kernel is not a valid ELF: %w", err)
	}
	defer f.Close()
	switch {
	case f.Class != elf.ELFCLASS64:
		return fmt.Errorf("decompressed kernel is %v, want ELFCLASS64", f.Class)
	case f.Machine != elf.EM_X86_64:
		return fmt.Errorf("decompressed kernel is for %v, want EM_X86_64", f.Machine)
	case f.Type != elf.ET_EXEC:
		return fmt.Errorf("decompressed kernel is %v, want ET_EXEC", f.Type)
	case len(f.Progs) == 0:
		return errors.New("decompressed kernel has no program headers")
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && (p.Off > uint64(len(b)) || p.Filesz > uint64(len(b))-p.Off) {
			return fmt.Errorf("decompressed kernel is truncated: segment at %#x+%#x beyond %d bytes",
				p.Off, p.Filesz, len(b))
		}
	}
	return nil
}

// readCapped reads r to EOF, failing beyond MaxSize. Data read before an
// error is returned with it: the kernel appends its size after the stream,
// which some readers report as trailing garbage.
func readCapped(r io.Reader) ([]byte, error) {
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(r, MaxSize+1))
	if n > MaxSize {
		return nil, fmt.Errorf("decompressed kernel exceeds %d MiB", MaxSize>>20)
	}
	return buf.Bytes(), err
}

// tolerant accepts output that ends in an error when it is a complete ELF.
func tolerant(out []byte, err error) ([]byte, error) {
	if err != nil && (len(out) == 0 || CheckELF(out) != nil) {
		return nil, err
	}
	return out, nil
}

func inflateGzip(p []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(p))
	if err != nil {
		return nil, err
	}
	zr.Multistream(false)
	return tolerant(readCapped(zr))
}

func inflateXZ(p []byte) ([]byte, error) {
	zr, err := xz.ReaderConfig{SingleStream: true}.NewReader(bytes.NewReader(p))
	if err != nil {
		return nil, err
	}
	return tolerant(readCapped(zr))
}

func inflateZstd(p []byte) ([]byte, error) {
	zr, err := zstd.NewReader(bytes.NewReader(p), zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(MaxSize), zstd.WithDecoderMaxWindow(1<<30))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	return tolerant(readCapped(zr))
}

func inflateBzip2(p []byte) ([]byte, error) {
	return tolerant(readCapped(bzip2.NewReader(bytes.NewReader(p))))
}

func inflateLZMA(p []byte) ([]byte, error) {
	// The kernel's lzma payload has an "unknown size" header; the reader
	// stops at the end marker.
	zr, err := lzma.NewReader(bytes.NewReader(p))
	if err != nil {
		return nil, err
	}
	return tolerant(readCapped(zr))
}

// lz4LegacyBlock is the legacy frame's fixed uncompressed block size.
const lz4LegacyBlock = 8 << 20

// inflateLZ4Legacy decodes the lz4 legacy frame the kernel uses: a magic,
// then blocks of (little-endian compressed size, data), each at most 8 MiB
// uncompressed; a repeated magic starts a new frame, and the kernel appends
// its uncompressed size after the last block.
func inflateLZ4Legacy(p []byte) ([]byte, error) {
	const magic = 0x184c2102
	var out, block []byte
	i := 4
	for i+4 <= len(p) {
		n := int(binary.LittleEndian.Uint32(p[i:]))
		if n == magic {
			i += 4
			continue
		}
		if n == 0 || n > len(p)-i-4 || n > lz4.CompressBlockBound(lz4LegacyBlock) {
			break // end of stream: the appended size or padding
		}
		// lz4 expands at most ~255×: size the buffer to what the block can hold.
		if want := min(lz4LegacyBlock, n*255+64); len(block) < want {
			block = make([]byte, want)
		}
		m, err := lz4.UncompressBlock(p[i+4:i+4+n], block)
		if err != nil {
			return tolerant(out, fmt.Errorf("lz4 block at %d: %w", i, err))
		}
		if len(out)+m > MaxSize {
			return nil, fmt.Errorf("decompressed kernel exceeds %d MiB", MaxSize>>20)
		}
		out = append(out, block[:m]...)
		i += 4 + n
	}
	if len(out) == 0 {
		return nil, errors.New("empty lz4 stream")
	}
	return out, nil
}
