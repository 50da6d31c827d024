package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/internal/atomicfile"
	"github.com/healthcode/healthcode/qr"
)

// config is the verifier's own trust, kept apart from the bundle file: the
// pin bundles must be signed under, and the rollback floor, the highest
// bundle sequence accepted under that pin. Whoever can write the bundle file
// (it sits where kiosks and scripts read it) can therefore neither change
// the key it is checked against nor, by deleting or corrupting it, let an
// older bundle back in.
type config struct {
	Pin   string `json:"pin"`
	Floor uint64 `json:"floor"`
}

// maxConfigFile bounds what a load reads; a configuration is ~100 bytes.
const maxConfigFile = 4 << 10

// defaultConfigName is the configuration's place under the user's
// configuration directory (os.UserConfigDir: $XDG_CONFIG_HOME or ~/.config
// on Linux, ~/Library/Application Support on macOS, %AppData% on Windows).
const defaultConfigName = "healthcode/verifier.json"

// errNoConfig says there is no configuration file yet.
var errNoConfig = errors.New("no verifier configuration")

// trustFlags are the flags of every command that reads a bundle.
type trustFlags struct {
	config *string // --config FILE: the configuration; default under the user's configuration directory
	pin    *string // --pin FINGERPRINT: check under this pin instead of the configured one
}

func newTrustFlags(fs *flag.FlagSet) trustFlags {
	return trustFlags{config: fs.String("config", "", ""), pin: fs.String("pin", "", "")}
}

// configPath is --config, or the default place.
func (e env) configPath(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	dir, err := e.configDir()
	if err != nil {
		return "", fmt.Errorf("no configuration directory (%v); pass --config FILE", err)
	}
	return filepath.Join(dir, filepath.FromSlash(defaultConfigName)), nil
}

// loadConfig reads the configuration at path. A missing file is errNoConfig;
// anything else that is not a configuration is an error naming the file.
func loadConfig(path string) (config, error) {
	var cf config
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return cf, fmt.Errorf("%w at %s", errNoConfig, path)
	}
	if err != nil {
		return cf, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigFile+1))
	if err != nil {
		return cf, fmt.Errorf("read %s: %w", path, err)
	}
	bad := func(why string) (config, error) {
		return config{}, fmt.Errorf("%s is not a verifier configuration (%s); remove it and run 'verifier sync URL --pin FINGERPRINT' again, which starts the rollback floor afresh", path, why)
	}
	if len(data) > maxConfigFile {
		return bad(fmt.Sprintf("larger than %d bytes", maxConfigFile))
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cf); err != nil {
		return bad(err.Error())
	}
	if dec.More() {
		return bad("data after the object")
	}
	if err := bundle.CheckPin(cf.Pin); err != nil {
		return bad("pin: " + err.Error())
	}
	cf.Pin = strings.ToLower(cf.Pin)
	return cf, nil
}

// saveConfig writes the configuration atomically, creating its directory.
func saveConfig(path string, cf config) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	data, err := json.MarshalIndent(cf, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(data, '\n'), 0o644)
}

// trust is what a bundle file is checked against.
type trust struct {
	pin   string
	floor uint64 // bundles below this sequence are refused
}

// trust resolves --pin and the configuration. --pin beats the configured
// pin; the floor is the configuration's when it holds the same pin. An
// unreadable configuration is an error even with --pin: the floor it held
// cannot be known, and guessing 0 is what a rollback needs.
func (c cmd) trust(f trustFlags) (trust, error) {
	path, err := c.configPath(*f.config)
	if err != nil {
		return trust{}, err
	}
	cf, err := loadConfig(path)
	noConfig := errors.Is(err, errNoConfig)
	if err != nil && !noConfig {
		return trust{}, err
	}
	if *f.pin == "" {
		if noConfig {
			return trust{}, fmt.Errorf("no pin: %v; run 'verifier sync URL --pin FINGERPRINT' first, or pass --pin", err)
		}
		return trust{pin: cf.Pin, floor: cf.Floor}, nil
	}
	pin, err := parsePin(*f.pin)
	if err != nil {
		return trust{}, fmt.Errorf("--pin: %w", err)
	}
	if !noConfig && cf.Pin == pin {
		return trust{pin: pin, floor: cf.Floor}, nil
	}
	return trust{pin: pin}, nil
}

// parsePin accepts the fingerprint as the issuer prints it and as its
// poster QR holds it: sha256:<64 hex>, any surrounding white space dropped.
func parsePin(s string) (string, error) {
	s = strings.TrimSpace(s)
	if err := bundle.CheckPin(s); err != nil {
		return "", err
	}
	return strings.ToLower(s), nil
}

// pinFromQR reads the pin from an image of the issuer's poster QR code.
func pinFromQR(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	text, err := qr.Decode(f)
	if err != nil {
		return "", fmt.Errorf("%s: %v", path, err)
	}
	pin, err := parsePin(text)
	if err != nil {
		// The text may be anything a QR can hold: never print it whole.
		return "", fmt.Errorf("%s holds %q, not a pin: %v", path, clipArg(text), err)
	}
	return pin, nil
}
