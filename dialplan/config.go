package dialplan

import (
	"fmt"

	"github.com/umrouter/umrouter/internal/configerr"
)

// Security is a dial plan's VoIP security mode.
type Security string

// The three security modes of the source product.
const (
	Unsecured  Security = "unsecured"   // TCP or TLS signaling, RTP or SRTP media
	SIPSecured Security = "sip-secured" // TLS signaling required, RTP media allowed
	Secured    Security = "secured"     // TLS signaling and SRTP media required
)

// URIType says how a plan reads the Request-URI.
type URIType string

// The URI types of the source product.
const (
	TelephoneExtension URIType = "telephone-extension"
	E164               URIType = "e164"
	SIPURI             URIType = "sip-uri"
)

// Plan is one entry of `dial_plans:`.
//
// A Plan whose Security is not one of the three modes (the zero Plan
// included) is treated as Secured by every decision of this package: the
// policy fails closed. Validate refuses such a plan in configuration.
type Plan struct {
	Name     string   `yaml:"name"`
	Security Security `yaml:"security"`
	// URIType says how the Request-URI is read; empty means TelephoneExtension.
	URIType URIType `yaml:"uri_type"`
	// NumberOfDigits is the length of an extension in a TelephoneExtension
	// plan; 0 accepts extensions of any length. Other URI types ignore it.
	NumberOfDigits int `yaml:"number_of_digits"`
}

// RequiresTLS reports whether the plan's signaling must arrive over TLS or
// DTLS (sip-secured and secured plans). It is also the question that the
// backend-pool validation asks: traffic of such a plan must not leave over
// plain TCP or UDP.
func (p Plan) RequiresTLS() bool { return p.Security != Unsecured }

// RequiresSRTP reports whether every media stream of the plan's calls must
// be SRTP (secured plans, and plans with an unknown security mode).
func (p Plan) RequiresSRTP() bool { return p.Security != Unsecured && p.Security != SIPSecured }

// uriType is the plan's URI type with the default applied.
func (p Plan) uriType() URIType {
	if p.URIType == "" {
		return TelephoneExtension
	}
	return p.URIType
}

// Plans is the `dial_plans:` section.
type Plans []Plan

// Lookup returns the plan called name.
func (ps Plans) Lookup(name string) (Plan, bool) {
	for _, p := range ps {
		if p.Name == name {
			return p, true
		}
	}
	return Plan{}, false
}

// Validate reports every problem of the section. Paths are relative to the section.
func (ps Plans) Validate() configerr.List {
	var errs configerr.List
	seen := map[string]bool{}
	for i, p := range ps {
		at := fmt.Sprintf("[%d]", i)
		switch {
		case p.Name == "":
			errs.Add(at+".name", "required")
		case seen[p.Name]:
			errs.Add(at+".name", "duplicate dial plan %q", p.Name)
		}
		seen[p.Name] = true
		switch p.Security {
		case Unsecured, SIPSecured, Secured:
		default:
			errs.Add(at+".security", "must be unsecured, sip-secured or secured, got %q", p.Security)
		}
		switch p.URIType {
		case "", TelephoneExtension, E164, SIPURI:
		default:
			errs.Add(at+".uri_type", "must be telephone-extension, e164 or sip-uri, got %q", p.URIType)
		}
		if p.NumberOfDigits < 0 || p.NumberOfDigits > 20 {
			errs.Add(at+".number_of_digits", "must be between 0 and 20, got %d", p.NumberOfDigits)
		}
	}
	return errs
}
