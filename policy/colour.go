package policy

import "fmt"

// Colour is what a venue sees. Its order is its severity: red dominates
// yellow dominates green.
type Colour int

const (
	Green Colour = iota + 1
	Yellow
	Red
)

// Colours lists every colour, least severe first.
var Colours = []Colour{Green, Yellow, Red}

// String is the colour's name as used in policy documents and the HTTP API.
func (c Colour) String() string {
	switch c {
	case Green:
		return "green"
	case Yellow:
		return "yellow"
	case Red:
		return "red"
	}
	return fmt.Sprintf("colour(%d)", int(c))
}

// Code is the one-letter form carried in tokens, kept short for the QR.
func (c Colour) Code() string {
	switch c {
	case Green:
		return "g"
	case Yellow:
		return "y"
	case Red:
		return "r"
	}
	return ""
}

// Valid reports whether c is one of the three colours.
func (c Colour) Valid() bool { return c >= Green && c <= Red }

// ParseColour accepts a colour name ("green").
func ParseColour(s string) (Colour, error) {
	for _, c := range Colours {
		if s == c.String() {
			return c, nil
		}
	}
	return 0, fmt.Errorf("unknown colour %q (want green, yellow or red)", s)
}

// ColourFromCode accepts the one-letter token form ("g").
func ColourFromCode(s string) (Colour, error) {
	for _, c := range Colours {
		if s == c.Code() {
			return c, nil
		}
	}
	return 0, fmt.Errorf("unknown colour code %q", s)
}

// MarshalText writes the colour's name.
func (c Colour) MarshalText() ([]byte, error) {
	if !c.Valid() {
		return nil, fmt.Errorf("invalid colour %d", int(c))
	}
	return []byte(c.String()), nil
}

// UnmarshalText reads a colour's name.
func (c *Colour) UnmarshalText(b []byte) error {
	v, err := ParseColour(string(b))
	if err != nil {
		return err
	}
	*c = v
	return nil
}
