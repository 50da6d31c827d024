//go:build js && wasm

// Command wasm is the verifier web app's WebAssembly module: the same Go
// verifier and QR decoder as the CLI, exported to the page as the global
// object `healthcode`. Build: make wasm (web/web.mk).
//
// JavaScript API (times are Unix milliseconds):
//
//	healthcode.decode(rgba Uint8Array|Uint8ClampedArray, width, height) -> string
//	    The text of the QR code in the RGBA frame, or "" if none is readable.
//	    Throws on a frame whose size does not match width×height×4.
//	healthcode.openBundle(jws, pin, nowMillis) -> {ok, reason, error, seq,
//	    issuedAt, staleAfter, expires, stale, expired, counting, hint, name, version}
//	    Opens the signed trust bundle under the pinned fingerprint. reason is
//	    "no_bundle", "bundle_invalid" or "bundle_expired" when not usable.
//	healthcode.verify(token, jws, pin, nowMillis) -> {valid, colour, reason,
//	    expires, hint, stale, bundleExpired}
//	    colour is "green", "yellow" or "red" when valid; reason is a
//	    verifier.Reason code ("bad_signature", "expired", "not_yet_valid",
//	    "unknown_key", "key_window", "malformed", "algorithm_not_allowed",
//	    "bundle_expired") or "no_bundle" / "bundle_invalid" when not.
//
// Once the functions are installed the module sets healthcode.ready = true
// and dispatches a "healthcode-ready" event on window. It never touches the
// network or storage: the page owns both.
package main

import (
	"syscall/js"
	"time"
)

func main() {
	warmUp()
	hc := js.Global().Get("Object").New()
	hc.Set("decode", js.FuncOf(decode))
	hc.Set("openBundle", js.FuncOf(openBundleJS))
	hc.Set("verify", js.FuncOf(verifyJS))
	hc.Set("ready", true)
	js.Global().Set("healthcode", hc)
	js.Global().Call("dispatchEvent", js.Global().Get("Event").New("healthcode-ready"))
	select {} // keep the exported functions alive
}

func decode(_ js.Value, args []js.Value) any {
	if len(args) != 3 {
		panic(js.Global().Get("TypeError").New("decode(rgba, width, height)"))
	}
	buf := make([]byte, args[0].Get("length").Int())
	js.CopyBytesToGo(buf, args[0])
	text, err := Decode(buf, args[1].Int(), args[2].Int())
	if err != nil {
		panic(js.Global().Get("Error").New(err.Error()))
	}
	return text
}

func openBundleJS(_ js.Value, args []js.Value) any {
	if len(args) != 3 {
		panic(js.Global().Get("TypeError").New("openBundle(jws, pin, nowMillis)"))
	}
	i := BundleStatus(args[0].String(), args[1].String(), millis(args[2]))
	return map[string]any{
		"ok": i.OK, "reason": i.Reason, "error": i.Error, "seq": float64(i.Sequence),
		"issuedAt": i.IssuedAt, "staleAfter": i.StaleAfter, "expires": i.Expires,
		"stale": i.Stale, "expired": i.Expired, "counting": i.Counting, "hint": i.Hint,
		"name": i.Name, "version": i.Version,
	}
}

func verifyJS(_ js.Value, args []js.Value) any {
	if len(args) != 4 {
		panic(js.Global().Get("TypeError").New("verify(token, jws, pin, nowMillis)"))
	}
	v := Verify(args[0].String(), args[1].String(), args[2].String(), millis(args[3]))
	return map[string]any{
		"valid": v.Valid, "colour": v.Colour, "reason": v.Reason, "expires": v.Expires,
		"hint": v.Hint, "stale": v.Stale, "bundleExpired": v.BundleExpired,
	}
}

func millis(v js.Value) time.Time { return time.UnixMilli(int64(v.Float())) }
