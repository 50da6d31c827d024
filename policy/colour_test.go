package policy

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestColourForms(t *testing.T) {
	for _, c := range Colours {
		if got, err := ParseColour(c.String()); err != nil || got != c {
			t.Errorf("ParseColour(%q) = %v, %v", c, got, err)
		}
		if got, err := ColourFromCode(c.Code()); err != nil || got != c {
			t.Errorf("ColourFromCode(%q) = %v, %v", c.Code(), got, err)
		}
		var back Colour
		b, err := json.Marshal(c)
		if err != nil || json.Unmarshal(b, &back) != nil || back != c {
			t.Errorf("JSON round trip of %v: %s %v %v", c, b, err, back)
		}
	}
	if Red <= Yellow || Yellow <= Green {
		t.Fatal("severity order broken: red > yellow > green")
	}
	if c := Colour(0); c.Valid() || c.Code() != "" || c.String() != "colour(0)" {
		t.Errorf("zero colour: %v %q %q", c.Valid(), c.Code(), c.String())
	}
	if _, err := json.Marshal(Colour(7)); err == nil {
		t.Error("an invalid colour marshalled")
	}
	if _, err := ColourFromCode("x"); err == nil || err.Error() != `unknown colour code "x"` {
		t.Errorf("ColourFromCode(x): %v", err)
	}
	var c Colour
	if err := json.Unmarshal([]byte(`"blue"`), &c); err == nil || !strings.Contains(err.Error(), `unknown colour "blue"`) {
		t.Errorf("Unmarshal blue: %v", err)
	}
}

func TestDurationJSON(t *testing.T) {
	var v struct{ D Duration }
	if err := json.Unmarshal([]byte(`{"D":"90m"}`), &v); err != nil || v.D != 90*m {
		t.Fatalf("got %v, %v", v.D, err)
	}
	if b, _ := json.Marshal(v); string(b) != `{"D":"1h30m"}` {
		t.Fatalf("Marshal = %s", b)
	}
	for doc, want := range map[string]string{
		`{"D":5}`:     `want a duration string such as "72h" or "30d"`,
		`{"D":"5 d"}`: `invalid duration "5 d"`,
	} {
		if err := json.Unmarshal([]byte(doc), &v); err == nil || err.Error() != want {
			t.Errorf("Unmarshal(%s) = %v, want %s", doc, err, want)
		}
	}
}

func TestQuoteCutsAndEscapes(t *testing.T) {
	for in, want := range map[string]string{
		strings.Repeat("a", 31) + "é" + "tail": `"` + strings.Repeat("a", 31) + `…"`, // cut before é, not inside
		"\x1b[1A\rGREEN":                       `"\x1b[1A\rGREEN"`,
		`say "green"`:                          `"say \"green\""`,
		"bad\xffutf8":                          "\"bad\uFFFDutf8\"",
	} {
		if got := quote(in); got != want {
			t.Errorf("quote(%q) = %s, want %s", in, got, want)
		}
	}
}
