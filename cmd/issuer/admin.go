package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/internal/atomicfile"
	"github.com/healthcode/healthcode/internal/cliflag"
	"github.com/healthcode/healthcode/internal/clip"
	"github.com/healthcode/healthcode/internal/keyfile"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/boltstore"
	"github.com/healthcode/healthcode/issuer/httpapi"
	"github.com/healthcode/healthcode/policy"
	"github.com/healthcode/healthcode/qr"
)

const adminUsage = `issuer admin: administer a running issuer over its admin API

Usage:
  issuer admin attesters list
  issuer admin attesters add --id ID --key PUBKEY     (PUBKEY as printed by 'attester keygen')
  issuer admin attesters remove ID
  issuer admin policy get
  issuer admin policy set FILE
  issuer admin policy validate FILE
  issuer admin inventory
  issuer admin audit
  issuer admin keys list
  issuer admin keys rotate [--immediate]
  issuer admin keys revoke KID                         (a stolen key: withdrawn from the next bundle at once)
  issuer admin tokens list
  issuer admin tokens create NAME                      (prints the new token once)
  issuer admin tokens revoke NAME

Every command takes:
  --url URL          issuer base URL (default $HEALTHCODE_URL, else http://127.0.0.1:8080)
  --token-file FILE  admin token file (default $HEALTHCODE_ADMIN_TOKEN_FILE, else ./data/admin.token)
  --json             print the API's JSON as it is

Environment (a flag given on the command line always wins):
  HEALTHCODE_URL               the issuer base URL
  HEALTHCODE_ADMIN_TOKEN_FILE  a file holding the admin token
  HEALTHCODE_ADMIN_TOKEN       the admin token itself (not a path), for secret stores that
                               hand out values; not to be set together with the _FILE one

Run 'issuer admin COMMAND SUBCOMMAND --help' for a command's flags.
`

type adminClient struct {
	url, tokenFile string
	json           bool
	http           *http.Client
	stdout         io.Writer
	// tokenFileFlag is true when --token-file was on the command line: it
	// then beats the environment.
	tokenFileFlag bool
}

// flags registers the common flags; values already set (by flags before
// the command) are the defaults, so they may stand on either side of it.
func (a *adminClient) flags(fs *flag.FlagSet) {
	if a.url == "" {
		if a.url = os.Getenv("HEALTHCODE_URL"); a.url == "" {
			a.url = "http://127.0.0.1:8080"
		}
	}
	if a.tokenFile == "" {
		if a.tokenFile = os.Getenv("HEALTHCODE_ADMIN_TOKEN_FILE"); a.tokenFile == "" {
			a.tokenFile = filepath.Join("data", adminTokenFile)
		}
	}
	fs.StringVar(&a.url, "url", a.url, "issuer base `URL` ($HEALTHCODE_URL)")
	fs.StringVar(&a.tokenFile, "token-file", a.tokenFile, "admin token `FILE` ($HEALTHCODE_ADMIN_TOKEN_FILE)")
	fs.BoolVar(&a.json, "json", a.json, "print the API's JSON as it is")
}

// noted records whether fs, just parsed, had --token-file.
func (a *adminClient) noted(fs *flag.FlagSet) {
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "token-file" {
			a.tokenFileFlag = true
		}
	})
}

// token finds the admin token: --token-file, else $HEALTHCODE_ADMIN_TOKEN
// (the token itself) or $HEALTHCODE_ADMIN_TOKEN_FILE, else
// ./data/admin.token.
func (a *adminClient) token() (string, error) {
	if env := os.Getenv("HEALTHCODE_ADMIN_TOKEN"); env != "" && !a.tokenFileFlag {
		if os.Getenv("HEALTHCODE_ADMIN_TOKEN_FILE") != "" {
			return "", usagef("HEALTHCODE_ADMIN_TOKEN and HEALTHCODE_ADMIN_TOKEN_FILE are both set; set one (or pass --token-file)")
		}
		t := strings.TrimSpace(env)
		if looksLikePath(t) {
			return "", usagef("HEALTHCODE_ADMIN_TOKEN holds a path, not a token; for a file use HEALTHCODE_ADMIN_TOKEN_FILE or --token-file")
		}
		return t, nil
	}
	b, err := os.ReadFile(a.tokenFile)
	if err != nil {
		return "", fmt.Errorf("admin token: %w (use --token-file, HEALTHCODE_ADMIN_TOKEN_FILE or HEALTHCODE_ADMIN_TOKEN)", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// looksLikePath tells a file name from a token: tokens are
// issuer.AdminTokenPrefix and base64url, which has no slash.
func looksLikePath(s string) bool {
	if strings.HasPrefix(s, issuer.AdminTokenPrefix) {
		return false
	}
	if strings.ContainsAny(s, `/\`) || strings.HasPrefix(s, "~") {
		return true
	}
	_, err := os.Stat(s)
	return err == nil
}

// call does one admin request; out, if not nil, receives the JSON answer.
func (a *adminClient) call(ctx context.Context, method, path string, body []byte, out any) ([]byte, error) {
	u, err := url.Parse(a.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usagef("--url must be an http(s) URL, got %q", a.url)
	}
	tok, err := a.token()
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(a.url, "/")+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		var e httpapi.ErrorResponse
		if json.Unmarshal(raw, &e) == nil && e.Error.Message != "" {
			return nil, fmt.Errorf("%s (%s, HTTP %d)", e.Error.Message, e.Error.Code, resp.StatusCode)
		}
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return nil, fmt.Errorf("unexpected answer from the issuer: %w", err)
		}
	}
	return raw, nil
}

// adminCommands are the commands of 'issuer admin' and their subcommands
// (none for a command that is one on its own).
var adminCommands = map[string][]string{
	"attesters": {"list", "add", "remove"},
	"policy":    {"get", "set", "validate"},
	"inventory": nil,
	"audit":     nil,
	"keys":      {"list", "rotate", "revoke"},
	"tokens":    {"list", "create", "revoke"},
}

func isHelp(arg string) bool { return arg == "help" || arg == "-h" || arg == "--help" }

func cmdAdmin(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, adminUsage)
		return usagefIn("admin", "a command is needed")
	}
	if isHelp(args[0]) {
		fmt.Fprint(stdout, adminUsage)
		return nil
	}
	a := &adminClient{http: &http.Client{Timeout: 15 * time.Second}, stdout: stdout}
	global := flag.NewFlagSet("admin", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	a.flags(global)
	// Stops at the command: its own flags come after it.
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, adminUsage)
			return nil
		}
		return usagefIn("admin", "%v", cliflag.Explain(err))
	}
	a.noted(global)
	if args = global.Args(); len(args) == 0 {
		return usagefIn("admin", "a command is needed")
	}
	cmd := args[0]
	sub := ""
	rest := args[1:]
	subs, known := adminCommands[cmd]
	switch {
	case !known:
		return usagefIn("admin", "unknown command %q", clip.String(cmd, 32))
	case len(subs) > 0 && (len(rest) == 0 || isHelp(rest[0])):
		if len(rest) > 0 {
			fmt.Fprint(stdout, adminHelpFor(cmd))
			return nil
		}
		return usagefIn("admin", "%s needs a command: %s", cmd, strings.Join(subs, ", "))
	case len(subs) > 0:
		sub, rest = rest[0], rest[1:]
		if !slices.Contains(subs, sub) {
			return usagefIn("admin "+cmd, "unknown command %q (want %s)", clip.String(sub, 32), strings.Join(subs, ", "))
		}
	}
	fs := newFlags("admin "+cmd, adminSynopsis(cmd, sub), stdout)
	a.flags(fs)
	var id, key string
	var immediate bool
	switch cmd + " " + sub {
	case "attesters add":
		fs.StringVar(&id, "id", "", "attester `ID` (letters, digits, . - _)")
		fs.StringVar(&key, "key", "", "attester public key `PUBKEY` (base64url, as printed by 'attester keygen')")
	case "keys rotate":
		fs.BoolVar(&immediate, "immediate", false, "sign with the new key at once (for a compromised key); verifiers must sync")
	}
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	a.noted(fs)
	pos := fs.Args()
	want := func(n int, what string) error {
		if len(pos) != n {
			return usagef("usage: issuer admin %s %s %s", cmd, sub, what)
		}
		return nil
	}

	switch cmd + " " + sub {
	case "attesters list":
		var out struct{ Attesters []httpapi.AttesterJSON }
		return a.print(ctx, "GET", "/v1/admin/attesters", nil, &out, func(w io.Writer) {
			fmt.Fprintln(w, "ID\tKEY\tADDED")
			for _, at := range out.Attesters {
				fmt.Fprintf(w, "%s\t%s\t%s\n", at.ID, at.Key, at.Added.Format(time.RFC3339))
			}
		})
	case "attesters add":
		if id == "" || key == "" {
			return usagef("attesters add needs --id and --key")
		}
		if _, err := keyfile.ParsePublic(key); err != nil {
			return usagef("--key: %v", err)
		}
		body, _ := json.Marshal(httpapi.AttesterJSON{ID: id, Key: key})
		return a.print(ctx, "POST", "/v1/admin/attesters", body, nil, func(w io.Writer) { fmt.Fprintf(w, "attester %s registered\n", id) })
	case "attesters remove":
		if err := want(1, "ID"); err != nil {
			return err
		}
		return a.print(ctx, "DELETE", "/v1/admin/attesters/"+url.PathEscape(pos[0]), nil, nil, func(w io.Writer) { fmt.Fprintf(w, "attester %s removed\n", pos[0]) })
	case "policy get":
		raw, err := a.call(ctx, "GET", "/v1/admin/policy", nil, nil)
		if err != nil {
			return err
		}
		var buf bytes.Buffer
		if json.Indent(&buf, raw, "", "  ") == nil {
			raw = append(buf.Bytes(), '\n')
		}
		_, err = stdout.Write(raw)
		return err
	case "policy set", "policy validate":
		if err := want(1, "FILE"); err != nil {
			return err
		}
		b, err := os.ReadFile(pos[0])
		if err != nil {
			return err
		}
		// Local check first: the same parser, so the same messages.
		if _, err := policy.Parse(b); err != nil {
			return fmt.Errorf("%s: %w", pos[0], err)
		}
		if sub == "validate" {
			var out struct{ Version int }
			return a.print(ctx, "POST", "/v1/admin/policy/validate", b, &out, func(w io.Writer) { fmt.Fprintf(w, "%s: valid policy, version %d\n", pos[0], out.Version) })
		}
		var out struct{ Version int }
		return a.print(ctx, "PUT", "/v1/admin/policy", b, &out, func(w io.Writer) { fmt.Fprintf(w, "policy version %d installed\n", out.Version) })
	case "inventory ":
		var out httpapi.InventoryJSON
		return a.print(ctx, "GET", "/v1/inventory", nil, &out, func(w io.Writer) { printInventory(w, out) })
	case "audit ":
		var out struct{ Entries []httpapi.AuditEntryJSON }
		return a.print(ctx, "GET", "/v1/admin/audit", nil, &out, func(w io.Writer) {
			fmt.Fprintln(w, "TIME\tADMIN\tACTION\tDETAIL")
			for _, e := range out.Entries {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", e.Time.UTC().Format(time.RFC3339), e.Admin, e.Action, e.Detail)
			}
		})
	case "keys list":
		var out struct{ Keys []httpapi.KeyJSON }
		return a.print(ctx, "GET", "/v1/admin/keys", nil, &out, func(w io.Writer) {
			fmt.Fprintln(w, "KID\tSTATUS\tSIGNS FROM\tTOKENS VALID UNTIL\tDESTROYED AT")
			for _, k := range out.Keys {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", k.Kid, k.Status, k.ActiveAt.UTC().Format(time.RFC3339), k.NotAfter.UTC().Format(time.RFC3339), k.DestroyAt.UTC().Format(time.RFC3339))
			}
		})
	case "keys rotate":
		body, _ := json.Marshal(map[string]bool{"immediate": immediate})
		var out struct {
			Kid      string
			ActiveAt time.Time `json:"active_at"`
		}
		return a.print(ctx, "POST", "/v1/admin/keys/rotate", body, &out, func(w io.Writer) {
			fmt.Fprintf(w, "key %s published; it signs from %s\n", out.Kid, out.ActiveAt.UTC().Format(time.RFC3339))
		})
	case "keys revoke":
		if err := want(1, "KID"); err != nil {
			return err
		}
		var out httpapi.RevocationJSON
		return a.print(ctx, "POST", "/v1/admin/keys/"+url.PathEscape(pos[0])+"/revoke", nil, &out, func(w io.Writer) {
			fmt.Fprintf(w, "key %s revoked: bundle %d withdraws it; key %s signs. Verifiers must sync now.\n", out.Kid, out.BundleSequence, out.SigningKid)
		})
	case "tokens list":
		var out struct{ Names []string }
		return a.print(ctx, "GET", "/v1/admin/tokens", nil, &out, func(w io.Writer) {
			for _, n := range out.Names {
				fmt.Fprintln(w, n)
			}
		})
	case "tokens create":
		if err := want(1, "NAME"); err != nil {
			return err
		}
		body, _ := json.Marshal(map[string]string{"name": pos[0]})
		var out struct{ Name, Token string }
		return a.print(ctx, "POST", "/v1/admin/tokens", body, &out, func(w io.Writer) { fmt.Fprintln(w, out.Token) })
	case "tokens revoke":
		if err := want(1, "NAME"); err != nil {
			return err
		}
		return a.print(ctx, "DELETE", "/v1/admin/tokens/"+url.PathEscape(pos[0]), nil, nil, func(w io.Writer) { fmt.Fprintf(w, "admin token %s revoked\n", pos[0]) })
	}
	return usagefIn("admin", "unknown command %q", strings.TrimSpace(cmd+" "+sub))
}

// adminSynopsis is the line of adminUsage for "cmd sub".
func adminSynopsis(cmd, sub string) string {
	prefix := strings.TrimSpace("issuer admin " + cmd + " " + sub)
	for _, line := range strings.Split(adminUsage, "\n") {
		if l := strings.TrimSpace(line); l == prefix || strings.HasPrefix(l, prefix+" ") {
			if note := strings.Index(l, "  ("); note > 0 { // the line's remark
				l = strings.TrimSpace(l[:note])
			}
			return l
		}
	}
	return prefix + " [flags]"
}

// adminHelpFor is the part of adminUsage about one command.
func adminHelpFor(cmd string) string {
	var b strings.Builder
	b.WriteString("Usage:\n")
	for _, line := range strings.Split(adminUsage, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "issuer admin "+cmd+" ") {
			b.WriteString(line + "\n")
		}
	}
	b.WriteString("\nRun 'issuer admin " + cmd + " SUBCOMMAND --help' for its flags; 'issuer admin help' for the common ones.\n")
	return b.String()
}

// print calls the API and prints its answer as a table, or as JSON with
// --json.
func (a *adminClient) print(ctx context.Context, method, path string, body []byte, out any, table func(io.Writer)) error {
	raw, err := a.call(ctx, method, path, body, out)
	if err != nil {
		return err
	}
	if a.json {
		if len(raw) == 0 {
			raw = []byte("{}")
		}
		_, err := fmt.Fprintf(a.stdout, "%s\n", bytes.TrimSpace(raw))
		return err
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

func printInventory(w io.Writer, inv httpapi.InventoryJSON) {
	ts := func(p *int64) string {
		if p == nil {
			return "-"
		}
		return time.Unix(*p, 0).UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(w, "policy version %d\n", inv.PolicyVersion)
	fmt.Fprintln(w, "CATEGORY\tCOUNT\tOLDEST\tNEXT DEADLINE\tRETENTION")
	for _, c := range inv.Categories {
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\n", c.Name, c.Count, ts(c.Oldest), ts(c.NextDeadline), c.Retention)
	}
}

// cmdFingerprint prints the bundle key fingerprint from the data
// directory, without a network call: that is the point of pinning.
func cmdFingerprint(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("fingerprint", "issuer fingerprint [--data DIR] [--kek FILE] [--qr FILE.png]", stdout)
	data := fs.String("data", "./data", "data directory `DIR`")
	kekFlag := fs.String("kek", os.Getenv(kekEnv), "key-encryption key `FILE` (default $"+kekEnv+", else DIR.kek); needed only when the issuer has not run on DIR yet")
	qrFile := fs.String("qr", "", "also write a poster QR code to `FILE.png`: its text is exactly the fingerprint, for 'verifier sync --pin-qr' and the verifier app")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("fingerprint takes no arguments")
	}
	fp, err := fingerprintOf(ctx, *data, *kekFlag)
	if err != nil {
		return err
	}
	if *qrFile != "" {
		png, err := qr.PNG(fp, posterQRSize)
		if err != nil {
			return fmt.Errorf("--qr: %w", err)
		}
		// Public: it goes on a wall.
		if err := atomicfile.Write(*qrFile, png, 0o644); err != nil {
			return fmt.Errorf("--qr: %w", err)
		}
		fmt.Fprintf(stderr, "issuer fingerprint: wrote the pin's QR code to %s\n", *qrFile)
	}
	fmt.Fprintln(stdout, fp)
	return nil
}

// posterQRSize is the poster QR's side in pixels: sharp when printed at
// A5 or larger.
const posterQRSize = 1024

// fingerprintOf reads the bundle key fingerprint from the data directory,
// without a network call: that is the point of pinning.
func fingerprintOf(ctx context.Context, data, kekFlag string) (string, error) {
	// A running issuer holds the database lock; it writes the fingerprint
	// beside it at start.
	if b, err := os.ReadFile(filepath.Join(data, fingerprintFile)); err == nil {
		fp := strings.TrimSpace(string(b))
		if bundle.CheckPin(fp) != nil {
			return "", fmt.Errorf("%s is damaged", filepath.Join(data, fingerprintFile))
		}
		return fp, nil
	}
	if _, err := os.Stat(filepath.Join(data, "healthcode.db")); err != nil {
		return "", fmt.Errorf("no issuer state in %s: run 'issuer serve --data %s' first", data, data)
	}
	kekFile, err := resolveKEK(kekFlag, data)
	if err != nil {
		return "", err
	}
	db, _, err := openStore(data, kekFile, false, boltstore.Options{})
	if err != nil {
		return "", err
	}
	defer db.Close()
	k, err := db.BundleKey(ctx)
	if err != nil {
		return "", fmt.Errorf("no bundle key in %s: run 'issuer serve --data %s' first", data, data)
	}
	return bundle.Fingerprint(publicOf(k)), nil
}
