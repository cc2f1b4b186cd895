package dialplan

import "testing"

func TestRequestURIPerURIType(t *testing.T) {
	ext5 := Plan{URIType: TelephoneExtension, NumberOfDigits: 5}
	extAny := Plan{URIType: TelephoneExtension}
	defaultType := Plan{NumberOfDigits: 4}
	e164 := Plan{URIType: E164, NumberOfDigits: 5}
	sipURI := Plan{URIType: SIPURI, NumberOfDigits: 5}
	rows := []struct {
		name       string
		plan       Plan
		user, host string
		code       int
		warning    string
	}{
		{"extension of exactly number_of_digits", ext5, "12345", "um.example.com", 0, ""},
		{"extension with visual separators", ext5, "12-3.45", "um.example.com", 0, ""},
		{"extension with tel parameters", ext5, "12345;phone-context=pbx.example.com", "um", 0, ""},
		{"fewer digits is incomplete", ext5, "1234", "um", 484, "extension incomplete: 5 digits expected"},
		{"one digit is incomplete", ext5, "1", "um", 484, "extension incomplete: 5 digits expected"},
		{"more digits is not found", ext5, "123456", "um", 404, "not a 5-digit extension"},
		{"a letter is not found", ext5, "1234a", "um", 404, "not a 5-digit extension"},
		{"a letter in a short number is not found", ext5, "12a", "um", 404, "not a 5-digit extension"},
		{"a leading + is not found", ext5, "+1234", "um", 404, "not a 5-digit extension"},
		{"star and hash are not digits", ext5, "*1234", "um", 404, "not a 5-digit extension"},
		{"a percent-escaped digit is not a digit", ext5, "%3112345", "um", 404, "not a 5-digit extension"},
		{"nothing dialed is not found", ext5, "", "um", 404, "not a 5-digit extension"},
		{"separators only is not found", ext5, "--", "um", 404, "not a 5-digit extension"},
		{"number_of_digits 0 takes any length", extAny, "1234567", "um", 0, ""},
		{"number_of_digits 0 takes one digit", extAny, "7", "um", 0, ""},
		{"number_of_digits 0 still wants digits", extAny, "alice", "um", 404, "not an extension number"},
		{"number_of_digits 0 refuses nothing dialed", extAny, "", "um", 404, "not an extension number"},
		{"empty uri_type is telephone-extension", defaultType, "1234", "um", 0, ""},
		{"empty uri_type counts digits", defaultType, "123", "um", 484, "extension incomplete: 4 digits expected"},

		{"E.164 number", e164, "+14255550100", "um", 0, ""},
		{"E.164 ignores number_of_digits", e164, "+44", "um", 0, ""},
		{"E.164 with visual separators", e164, "+1-425-555-0100", "um", 0, ""},
		{"E.164 with parameters", e164, "+14255550100;ext=22;npdi", "um", 0, ""},
		{"E.164 of 15 digits", e164, "+123456789012345", "um", 0, ""},
		{"E.164 of 16 digits", e164, "+1234567890123456", "um", 404, "not an E.164 number (+ and up to 15 digits)"},
		{"E.164 without +", e164, "14255550100", "um", 404, "not an E.164 number (+ and up to 15 digits)"},
		{"E.164 with a letter", e164, "+1425555O100", "um", 404, "not an E.164 number (+ and up to 15 digits)"},
		{"E.164 with two +", e164, "++14255550100", "um", 404, "not an E.164 number (+ and up to 15 digits)"},
		{"+ alone is incomplete", e164, "+", "um", 484, "E.164 number incomplete"},
		{"+ and separators is incomplete", e164, "+-", "um", 484, "E.164 number incomplete"},
		{"empty is not E.164", e164, "", "um", 404, "not an E.164 number (+ and up to 15 digits)"},

		{"user@host", sipURI, "alice", "contoso.com", 0, ""},
		{"sip-uri takes a number as user", sipURI, "+14255550100", "contoso.com", 0, ""},
		{"sip-uri ignores number_of_digits", sipURI, "1", "contoso.com", 0, ""},
		{"sip-uri without user", sipURI, "", "contoso.com", 404, "Request-URI must be user@host"},
		{"sip-uri without host", sipURI, "alice", "", 404, "Request-URI must be user@host"},

		{"unknown uri_type refuses everything", Plan{URIType: "x400"}, "12345", "um", 404, "dial plan has an unknown uri_type"},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			got := row.plan.CheckURI(row.user, row.host)
			switch row.code {
			case 0:
				wantAllowed(t, got)
			case 404:
				wantRefused(t, got, 404, ReasonURIInvalid, row.warning)
			case 484:
				wantRefused(t, got, 484, ReasonURIIncomplete, row.warning)
			}
		})
	}
}

func FuzzCheckURI(f *testing.F) {
	for _, s := range []string{"12345", "+14255550100", "1-2.3(4)5;phone-context=x", "+", "", "alice"} {
		f.Add(s, "um.example.com", 5)
	}
	f.Fuzz(func(t *testing.T, user, host string, digits int) {
		for _, ut := range []URIType{"", TelephoneExtension, E164, SIPURI, "other"} {
			d := Plan{URIType: ut, NumberOfDigits: digits}.CheckURI(user, host)
			switch {
			case d.Allow:
				if d != (Decision{Allow: true}) {
					t.Fatalf("allowed with %+v", d)
				}
			case d.Code == 404 && d.Reason == ReasonURIInvalid:
			case d.Code == 484 && d.Reason == ReasonURIIncomplete:
			default:
				t.Fatalf("%s %q@%q: %+v", ut, user, host, d)
			}
			assertQuotable(t, d.Warning)
		}
	})
}
