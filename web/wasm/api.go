package main

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"image"
	"time"

	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/qr"
	"github.com/healthcode/healthcode/verifier"
)

// This file is the module's logic, free of syscall/js so that it is tested
// on the host (api_test.go); main.go only converts values at the boundary.

// Reason codes beyond verifier's, for bundle problems the page must tell
// apart: none held, one that does not open under the pin.
const (
	ReasonNoBundle  = "no_bundle"
	ReasonBundleBad = "bundle_invalid"
)

// BundleInfo is what the page shows about its trust bundle. Times are Unix
// milliseconds, JavaScript's unit.
type BundleInfo struct {
	OK         bool   `json:"ok"`
	Reason     string `json:"reason,omitempty"`
	Error      string `json:"error,omitempty"`
	Sequence   uint64 `json:"seq"`
	IssuedAt   int64  `json:"issuedAt"`
	StaleAfter int64  `json:"staleAfter"`
	Expires    int64  `json:"expires"`
	Stale      bool   `json:"stale"`
	Expired    bool   `json:"expired"`
	Counting   bool   `json:"counting"`
	Hint       bool   `json:"hint"`
	Name       string `json:"name"`
	Version    int    `json:"version"`
}

// Verdict is what the page may show after a scan: colour, validity end and
// hint for a valid token, a reason code otherwise.
type Verdict struct {
	Valid         bool   `json:"valid"`
	Colour        string `json:"colour,omitempty"` // green, yellow, red
	Reason        string `json:"reason,omitempty"` // verifier.Reason codes, or ReasonNoBundle / ReasonBundleBad
	Expires       int64  `json:"expires,omitempty"`
	Hint          string `json:"hint,omitempty"`
	Stale         bool   `json:"stale"`
	BundleExpired bool   `json:"bundleExpired"`
}

// opened caches the last bundle opened, so each scan does not pay for the
// bundle's signature check again. The page holds one bundle at a time.
var opened struct {
	jws, pin string
	b        *bundle.Bundle
}

func openBundle(jws, pin string) (*bundle.Bundle, error) {
	if jws == "" || pin == "" {
		return nil, errNoBundle
	}
	if opened.b != nil && opened.jws == jws && opened.pin == pin {
		return opened.b, nil
	}
	b, err := bundle.Open(jws, pin)
	if err != nil {
		return nil, err
	}
	opened.jws, opened.pin, opened.b = jws, pin, b
	return b, nil
}

var errNoBundle = errors.New("no trust bundle held")

// BundleStatus opens jws under pin and describes it at now.
func BundleStatus(jws, pin string, now time.Time) BundleInfo {
	b, err := openBundle(jws, pin)
	if err != nil {
		r := ReasonBundleBad
		if errors.Is(err, errNoBundle) {
			r = ReasonNoBundle
		}
		return BundleInfo{Reason: r, Error: err.Error()}
	}
	info := BundleInfo{
		OK:         true,
		Sequence:   b.Sequence,
		IssuedAt:   b.IssuedAt * 1000,
		StaleAfter: b.StaleAfter * 1000,
		Expires:    b.Expires * 1000,
		Stale:      b.Stale(now),
		Expired:    b.Expired(now),
		Counting:   b.Policy.Counting,
		Hint:       b.Policy.HolderHint,
		Name:       b.Policy.Name,
		Version:    b.Policy.Version,
	}
	if info.Expired {
		info.Reason = verifier.ReasonBundleExpired
	}
	return info
}

// Verify checks a scanned token with the same verifier package as the CLI.
func Verify(tok, jws, pin string, now time.Time) Verdict {
	b, err := openBundle(jws, pin)
	if err != nil {
		r := ReasonBundleBad
		if errors.Is(err, errNoBundle) {
			r = ReasonNoBundle
		}
		return Verdict{Reason: r}
	}
	res, err := verifier.Verify(tok, b, now)
	if err != nil {
		return Verdict{
			Reason:        verifier.Reason(err),
			Stale:         b.Stale(now),
			BundleExpired: b.Expired(now),
		}
	}
	return Verdict{
		Valid:   true,
		Colour:  res.Colour.String(),
		Expires: res.Expires.UnixMilli(),
		Hint:    res.Hint,
		Stale:   res.BundleStale,
	}
}

// warmUp pays, at load, the one-time costs the first scan would otherwise
// add to its verdict: Ed25519's lazily built tables, the browser's lazy
// compilation of the decoder's functions, and the growth of the module's
// memory to a frame's working set.
func warmUp() {
	priv := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	msg := []byte("warm up")
	ed25519.Verify(priv.Public().(ed25519.PublicKey), msg, ed25519.Sign(priv, msg))
	Decode(warmFrame(), 640, 480)
}

// warmQR is "healthcode" as a version 1 QR code (go-qrcode, level M).
var warmQR = [...]string{
	"#######....#..#######",
	"#.....#..#.#..#.....#",
	"#.###.#..#....#.###.#",
	"#.###.#..##.#.#.###.#",
	"#.###.#..#.##.#.###.#",
	"#.....#.#.#...#.....#",
	"#######.#.#.#.#######",
	".........#...........",
	"#..#.##.#..###.#.....",
	".#..#..#..##..###..##",
	"###.#.#.#..#...#.##.#",
	"..####.###..#.#.##.##",
	".####.#..###....#....",
	"........#.#..#.#.#..#",
	"#######...###..##.##.",
	"#.....#.#.#....#...##",
	"#.###.#..##.##..#..#.",
	"#.###.#.###...#######",
	"#.###.#...##.####.#.#",
	"#.....#..#.##..##....",
	"#######.###....##..#.",
}

// warmFrame draws warmQR at 12 pixels a module in a white 640×480 RGBA frame.
func warmFrame() []byte {
	const w, h, scale = 640, 480, 12
	pix := make([]byte, 4*w*h)
	for i := range pix {
		pix[i] = 0xff
	}
	x0, y0 := (w-len(warmQR)*scale)/2, (h-len(warmQR)*scale)/2
	for r, row := range warmQR {
		for c, m := range row {
			if m != '#' {
				continue
			}
			for y := y0 + r*scale; y < y0+(r+1)*scale; y++ {
				for x := x0 + c*scale; x < x0+(c+1)*scale; x++ {
					i := 4 * (y*w + x)
					pix[i], pix[i+1], pix[i+2] = 0, 0, 0
				}
			}
		}
	}
	return pix
}

// MaxFrame bounds a frame handed to Decode; the page scales frames down to
// well under this.
const MaxFrame = 2048 * 2048

// Decode reads a QR code from RGBA pixels (a canvas's ImageData). It returns
// "" and no error when the frame holds no readable code, the usual case
// while the camera looks for one; errors are for frames that are not
// width×height RGBA.
func Decode(rgba []byte, w, h int) (string, error) {
	if w <= 0 || h <= 0 || w*h > MaxFrame {
		return "", fmt.Errorf("frame is %dx%d, want 1 to %d pixels", w, h, MaxFrame)
	}
	if len(rgba) != 4*w*h {
		return "", fmt.Errorf("frame has %d bytes, want %d for %dx%d RGBA", len(rgba), 4*w*h, w, h)
	}
	// Grey first: gozxing reads pixels through image.Image.At, which costs
	// an allocation per pixel for RGBA but none for Gray.
	g := image.NewGray(image.Rect(0, 0, w, h))
	for i, j := 0, 0; j < len(g.Pix); i, j = i+4, j+1 {
		// Integer Rec. 601 luma, as ZXing's RGB source computes it.
		g.Pix[j] = byte((306*uint32(rgba[i]) + 601*uint32(rgba[i+1]) + 117*uint32(rgba[i+2])) >> 10)
	}
	text, err := qr.DecodeImage(g)
	if errors.Is(err, qr.ErrNoCode) {
		return "", nil
	}
	return text, err
}
