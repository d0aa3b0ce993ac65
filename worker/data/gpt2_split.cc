#include "worker/data/gpt2_split.h"

#include <string>

#include "re2/re2.h"

namespace dstrain::data {
namespace {

constexpr char32_t kMaxCodePoint = 0x10FFFF;

struct Range {
  char32_t first;
  char32_t last;
  CharClass cls;
};

// Letters and numbers that Unicode 15.1 (CJK Extension I) and 16.0 (September 2024) assigned,
// after the Unicode 15.0 tables of Debian 12's libre2, and that `tokenizers` 0.22 knows (from
// Unicode 16.0's DerivedGeneralCategory.txt). unicode_class_test finds any gap left here.
constexpr Range kNewerThanRe2[] = {
    {0x1C89, 0x1C8A, CharClass::kLetter},    // Cyrillic TJE
    {0xA7CB, 0xA7CD, CharClass::kLetter},    // Latin Extended-D additions
    {0xA7DA, 0xA7DC, CharClass::kLetter},    //
    {0x105C0, 0x105F3, CharClass::kLetter},  // Todhri
    {0x10D40, 0x10D49, CharClass::kNumber},  // Garay digits
    {0x10D4A, 0x10D65, CharClass::kLetter},  // Garay
    {0x10D6F, 0x10D85, CharClass::kLetter},  //
    {0x10EC2, 0x10EC4, CharClass::kLetter},  // Arabic Extended-C additions
    {0x11380, 0x11389, CharClass::kLetter},  // Tulu-Tigalari
    {0x1138B, 0x1138B, CharClass::kLetter},  //
    {0x1138E, 0x1138E, CharClass::kLetter},  //
    {0x11390, 0x113B5, CharClass::kLetter},  //
    {0x113B7, 0x113B7, CharClass::kLetter},  //
    {0x113D1, 0x113D1, CharClass::kLetter},  //
    {0x113D3, 0x113D3, CharClass::kLetter},  //
    {0x116D0, 0x116E3, CharClass::kNumber},  // Myanmar Extended-C digits
    {0x11BC0, 0x11BE0, CharClass::kLetter},  // Sunuwar
    {0x11BF0, 0x11BF9, CharClass::kNumber},  // Sunuwar digits
    {0x13460, 0x143FA, CharClass::kLetter},  // Egyptian Hieroglyphs Extended-A
    {0x16100, 0x1611D, CharClass::kLetter},  // Gurung Khema
    {0x16130, 0x16139, CharClass::kNumber},  // Gurung Khema digits
    {0x16D40, 0x16D6C, CharClass::kLetter},  // Kirat Rai
    {0x16D70, 0x16D79, CharClass::kNumber},  // Kirat Rai digits
    {0x18CFF, 0x18CFF, CharClass::kLetter},  // Khitan Small Script character-18CFF
    {0x1CCF0, 0x1CCF9, CharClass::kNumber},  // outlined digits
    {0x1E5D0, 0x1E5ED, CharClass::kLetter},  // Ol Onal
    {0x1E5F0, 0x1E5F0, CharClass::kLetter},  //
    {0x1E5F1, 0x1E5FA, CharClass::kNumber},  // Ol Onal digits
    {0x2EBF0, 0x2EE5D, CharClass::kLetter},  // CJK Unified Ideographs Extension I (15.1)
};

// The White_Space property, unchanged since Unicode 6.3 dropped U+180E: what Oniguruma's \s
// matches in Unicode text. RE2's \s is ASCII only, so it cannot be asked.
constexpr Range kWhiteSpace[] = {
    {0x0009, 0x000D, CharClass::kSpace}, {0x0020, 0x0020, CharClass::kSpace},
    {0x0085, 0x0085, CharClass::kSpace}, {0x00A0, 0x00A0, CharClass::kSpace},
    {0x1680, 0x1680, CharClass::kSpace}, {0x2000, 0x200A, CharClass::kSpace},
    {0x2028, 0x2029, CharClass::kSpace}, {0x202F, 0x202F, CharClass::kSpace},
    {0x205F, 0x205F, CharClass::kSpace}, {0x3000, 0x3000, CharClass::kSpace},
};

void AppendUtf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Marks in `table` every code point in a maximal run matching `class_re` (e.g. "(\p{L}+)") over
// `all`, which holds every scalar value in order. Asking RE2 for runs rather than one code point at
// a time reads its tables in a few milliseconds instead of a few hundred.
void MarkRuns(const std::string& all, const char* class_re, CharClass cls,
              std::vector<uint8_t>& table) {
  const RE2 re(class_re);
  re2::StringPiece input(all);
  re2::StringPiece run;
  while (RE2::FindAndConsume(&input, re, &run)) {
    char32_t first;
    DecodeUtf8(absl::string_view(run.data(), run.size()), &first);
    size_t last_start = run.size() - 1;  // back over continuation bytes to the last code point
    while (last_start > 0 && (static_cast<unsigned char>(run[last_start]) & 0xC0) == 0x80) {
      --last_start;
    }
    char32_t last;
    DecodeUtf8(absl::string_view(run.data() + last_start, run.size() - last_start), &last);
    // No run crosses the surrogate gap (U+D7FF and U+E000 are neither letters nor numbers), and
    // the decoder never yields a surrogate anyway.
    for (char32_t cp = first; cp <= last; ++cp) table[cp] = static_cast<uint8_t>(cls);
  }
}

const std::vector<uint8_t>* BuildTable() {
  auto* table =
      new std::vector<uint8_t>(kMaxCodePoint + 1, static_cast<uint8_t>(CharClass::kOther));
  std::string all;
  all.reserve(4 * (kMaxCodePoint + 1));
  for (char32_t cp = 0; cp <= kMaxCodePoint; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;  // surrogates have no UTF-8 form
    AppendUtf8(cp, all);
  }
  MarkRuns(all, "(\\p{L}+)", CharClass::kLetter, *table);
  MarkRuns(all, "(\\p{N}+)", CharClass::kNumber, *table);
  for (const Range& r : kNewerThanRe2) {
    for (char32_t cp = r.first; cp <= r.last; ++cp) (*table)[cp] = static_cast<uint8_t>(r.cls);
  }
  for (const Range& r : kWhiteSpace) {
    for (char32_t cp = r.first; cp <= r.last; ++cp) (*table)[cp] = static_cast<uint8_t>(r.cls);
  }
  return table;
}

// One byte per code point (1.1 MB), built on first use and never freed.
const uint8_t* Table() {
  static const std::vector<uint8_t>* const table = BuildTable();
  return table->data();
}

struct Char {
  CharClass cls;
  int len;
};

inline Char CharAt(absl::string_view text, size_t i, const uint8_t* table) {
  const unsigned char b = static_cast<unsigned char>(text[i]);
  if (b < 0x80) return {static_cast<CharClass>(table[b]), 1};
  char32_t cp;
  const int len = DecodeUtf8(text.substr(i), &cp);
  return {cp == kInvalidCodePoint ? CharClass::kOther : static_cast<CharClass>(table[cp]), len};
}

// Where the run of `cls` code points starting at `i` ends.
inline size_t RunEnd(absl::string_view text, size_t i, CharClass cls, const uint8_t* table) {
  while (i < text.size()) {
    const Char c = CharAt(text, i, table);
    if (c.cls != cls) break;
    i += c.len;
  }
  return i;
}

// The length of 's|'t|'re|'ve|'m|'ll|'d at `i` (case-sensitive, as GPT-2's pattern is), or 0.
inline size_t ContractionLength(absl::string_view text, size_t i) {
  if (text[i] != '\'' || i + 1 >= text.size()) return 0;
  const char a = text[i + 1];
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (i + 2 >= text.size()) return 0;
  const char b = text[i + 2];
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

}  // namespace

CharClass ClassOf(char32_t cp) {
  if (cp > kMaxCodePoint) return CharClass::kOther;
  return static_cast<CharClass>(Table()[cp]);
}

int DecodeUtf8(absl::string_view s, char32_t* cp) {
  const auto at = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const auto cont = [&](size_t i, unsigned char lo, unsigned char hi) {
    return i < s.size() && at(i) >= lo && at(i) <= hi;
  };
  const unsigned char b0 = at(0);
  // The well-formed sequences of the Unicode Standard's table 3-7.
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  if (b0 >= 0xC2 && b0 <= 0xDF && cont(1, 0x80, 0xBF)) {
    *cp = (char32_t{b0} & 0x1F) << 6 | (at(1) & 0x3F);
    return 2;
  }
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    const unsigned char lo = b0 == 0xE0 ? 0xA0 : 0x80;  // no overlong forms
    const unsigned char hi = b0 == 0xED ? 0x9F : 0xBF;  // no surrogates
    if (cont(1, lo, hi) && cont(2, 0x80, 0xBF)) {
      *cp = (char32_t{b0} & 0x0F) << 12 | (char32_t{at(1)} & 0x3F) << 6 | (at(2) & 0x3F);
      return 3;
    }
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    const unsigned char lo = b0 == 0xF0 ? 0x90 : 0x80;  // no overlong forms
    const unsigned char hi = b0 == 0xF4 ? 0x8F : 0xBF;  // nothing above U+10FFFF
    if (cont(1, lo, hi) && cont(2, 0x80, 0xBF) && cont(3, 0x80, 0xBF)) {
      *cp = (char32_t{b0} & 0x07) << 18 | (char32_t{at(1)} & 0x3F) << 12 |
            (char32_t{at(2)} & 0x3F) << 6 | (at(3) & 0x3F);
      return 4;
    }
  }
  *cp = kInvalidCodePoint;
  return 1;
}

void SplitGpt2(absl::string_view text, std::vector<absl::string_view>& pieces) {
  const uint8_t* table = Table();
  size_t i = 0;
  while (i < text.size()) {
    size_t end = i + ContractionLength(text, i);
    if (end == i) {
      const Char c = CharAt(text, i, table);
      if (text[i] == ' ' && i + 1 < text.size() &&
          CharAt(text, i + 1, table).cls != CharClass::kSpace) {
        // " ?\p{L}+", " ?\p{N}+" or " ?[^\s\p{L}\p{N}]+" with its space.
        end = RunEnd(text, i + 1, CharAt(text, i + 1, table).cls, table);
      } else if (c.cls != CharClass::kSpace) {
        end = RunEnd(text, i, c.cls, table);
      } else {
        // \s+(?!\S): the whole run at the end of the text, else the run less its last code point
        // (which then leads the next piece, e.g. the space of " word"); a run of one code point
        // followed by non-space is left to the final \s+.
        size_t j = i;
        size_t last = i;
        while (j < text.size()) {
          const Char w = CharAt(text, j, table);
          if (w.cls != CharClass::kSpace) break;
          last = j;
          j += w.len;
        }
        end = (j == text.size() || last == i) ? j : last;
      }
    }
    pieces.push_back(text.substr(i, end - i));
    i = end;
  }
}

}  // namespace dstrain::data
