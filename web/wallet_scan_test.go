package web_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/issuer/issuertest"
	"github.com/healthcode/healthcode/web/webtest"
)

// TestWalletScanSmallCodes: the wallet's camera reads a lab's QR filling
// 20, 25 or 30 % of the frame's width. jsQR alone, on whole frames, misses
// the 20 % one (measured: no read in 20 s); every other frame's centre,
// scaled up, reads it.
func TestWalletScanSmallCodes(t *testing.T) {
	env := issuertest.Start(t)
	for _, fill := range []float64{0.20, 0.25, 0.30} {
		t.Run(fmt.Sprintf("%.0f%%", fill*100), func(t *testing.T) {
			att := env.Attest(t, attestation.TestNegative, time.Time{}, "")
			w := openWallet(t, env, webtest.Camera(webtest.CameraFileFill(t, att, fill)))
			w.Do(t, chromedp.Click(chromedp.CSS("#scan")))
			w.WaitFor(t, `document.querySelectorAll('#pending li').length === 1`, 20*time.Second, `document.getElementById('live').textContent`)
			w.Screenshot(t, "scanned")
		})
	}
}
