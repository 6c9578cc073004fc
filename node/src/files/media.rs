//! What a file is, from its content: kind, format, MIME type, image dimensions and thumbnail,
//! audio/video duration.
//!
//! The kind is decided by magic numbers in the first [`SNIFF_LEN`] bytes, never by the name:
//! a PNG named `x.bin` is an image, a program named `cat.jpg` is a file. [`Kind::Image`],
//! [`Kind::Audio`] and [`Kind::Video`] mean one of the [`Format`]s below, which the app can show
//! or play; anything else is [`Kind::File`], with the best MIME type we can name (the `infer`
//! crate's table: `application/pdf`, `image/heif`…) so the app can still pick an icon.
//!
//! The table is ours rather than `infer`'s because we need more than a MIME type: the format
//! decides which header parser gives the duration and whether a thumbnail can be made, and a few
//! containers need a closer look than a magic number (an MP4 whose only track is sound is audio;
//! HEIF shares MP4's `ftyp` box but is an image we cannot decode).
//!
//! Images get their dimensions from the header alone (`imagesize`), and a JPEG thumbnail that fits
//! [`THUMBNAIL_SIDE`]² and [`MAX_THUMBNAIL_BYTES`], small enough to travel inside the message so
//! the app can show the picture before the download. Decoding is refused above
//! [`MAX_THUMBNAIL_SOURCE_PIXELS`] or [`MAX_THUMBNAIL_SOURCE_BYTES`]: a decompression bomb declares
//! a huge canvas in a tiny file. Durations are read where a header says them cheaply: WAV (header
//! arithmetic), FLAC (`STREAMINFO`), MP4/MOV/M4A (`mvhd`). Ogg, MP3, Matroska and AVI get none.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use image::codecs::jpeg::JpegEncoder;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

use super::hashing::read_full;
use super::{
    MAX_THUMBNAIL_BYTES, MAX_THUMBNAIL_DECODE_ALLOC, MAX_THUMBNAIL_SOURCE_BYTES,
    MAX_THUMBNAIL_SOURCE_PIXELS, SNIFF_LEN, THUMBNAIL_SIDE,
};

/// MIME type of content we cannot name.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// Boxes (MP4), chunks (WAV) looked at before giving up on finding a header: a hostile file
/// cannot make the parsers walk forever.
const MAX_BOXES: usize = 256;

/// What the app does with a file: show it, play it, or offer it for download.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A picture the app can show ([`Format::Png`], [`Format::Jpeg`], [`Format::Gif`],
    /// [`Format::Webp`], [`Format::Bmp`]).
    Image,
    /// Sound the app can play.
    Audio,
    /// A video the app can play.
    Video,
    /// Anything else.
    File,
}

/// A media format recognised from its magic number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// PNG.
    Png,
    /// JPEG (JFIF, EXIF…).
    Jpeg,
    /// GIF (87a, 89a).
    Gif,
    /// WebP (RIFF `WEBP`).
    Webp,
    /// Windows bitmap.
    Bmp,
    /// MPEG audio layer III (an ID3v2 tag or a frame header first).
    Mp3,
    /// Ogg (Vorbis, Opus…), unless its first stream is Theora.
    Ogg,
    /// Ogg whose first stream is Theora video.
    OggVideo,
    /// FLAC.
    Flac,
    /// WAV (RIFF `WAVE`).
    Wav,
    /// MPEG-4 audio: an `ftyp` with an audio brand (`M4A `…), or an MP4 whose tracks are all
    /// sound.
    M4a,
    /// MPEG-4 video (and 3GP).
    Mp4,
    /// QuickTime (`ftyp` brand `qt  `).
    Mov,
    /// WebM (Matroska with DocType `webm`).
    Webm,
    /// Matroska.
    Matroska,
    /// AVI (RIFF `AVI `).
    Avi,
}

impl Format {
    /// Whether this is an image, audio or video.
    pub fn kind(self) -> Kind {
        match self {
            Format::Png | Format::Jpeg | Format::Gif | Format::Webp | Format::Bmp => Kind::Image,
            Format::Mp3 | Format::Ogg | Format::Flac | Format::Wav | Format::M4a => Kind::Audio,
            Format::OggVideo
            | Format::Mp4
            | Format::Mov
            | Format::Webm
            | Format::Matroska
            | Format::Avi => Kind::Video,
        }
    }

    /// The MIME type.
    pub fn mime(self) -> &'static str {
        match self {
            Format::Png => "image/png",
            Format::Jpeg => "image/jpeg",
            Format::Gif => "image/gif",
            Format::Webp => "image/webp",
            Format::Bmp => "image/bmp",
            Format::Mp3 => "audio/mpeg",
            Format::Ogg => "audio/ogg",
            Format::OggVideo => "video/ogg",
            Format::Flac => "audio/flac",
            Format::Wav => "audio/wav",
            Format::M4a => "audio/mp4",
            Format::Mp4 => "video/mp4",
            Format::Mov => "video/quicktime",
            Format::Webm => "video/webm",
            Format::Matroska => "video/x-matroska",
            Format::Avi => "video/x-msvideo",
        }
    }

    /// The decoder to use for a thumbnail, if we can decode this format.
    fn thumbnail_decoder(self) -> Option<ImageFormat> {
        match self {
            Format::Png => Some(ImageFormat::Png),
            Format::Jpeg => Some(ImageFormat::Jpeg),
            Format::Gif => Some(ImageFormat::Gif),
            Format::Webp => Some(ImageFormat::WebP),
            _ => None,
        }
    }
}

/// What [`probe`] found out about a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaInfo {
    /// Image, audio, video or file.
    pub kind: Kind,
    /// The format, for images, audio and video.
    pub format: Option<Format>,
    /// The MIME type ([`OCTET_STREAM`] when unknown).
    pub mime: &'static str,
    /// Width and height in pixels of an image, as displayed (EXIF rotation applied when the
    /// image was decoded for its thumbnail).
    pub dimensions: Option<(u32, u32)>,
    /// Length of audio or video, where a header gives it cheaply.
    pub duration: Option<Duration>,
    /// A JPEG of at most [`THUMBNAIL_SIDE`]² pixels and [`MAX_THUMBNAIL_BYTES`] bytes, for images
    /// we can decode within the limits.
    pub thumbnail: Option<Vec<u8>>,
}

/// Finds out what the file at `path` is: kind, format, MIME type, and for images their
/// dimensions and a thumbnail, for audio and video their duration where cheap.
///
/// Reads the first [`SNIFF_LEN`] bytes and then only headers, except that an image within the
/// limits is decoded for its thumbnail (bounded by [`MAX_THUMBNAIL_SOURCE_BYTES`],
/// [`MAX_THUMBNAIL_SOURCE_PIXELS`] and [`MAX_THUMBNAIL_DECODE_ALLOC`]). Only failing to open or
/// read the start of the file is an error; a header that cannot be parsed just leaves its field
/// `None`. Blocking and, for large images, CPU-heavy: run it in `tokio::task::spawn_blocking`.
pub fn probe(path: &Path) -> io::Result<MediaInfo> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut head = vec![0u8; SNIFF_LEN];
    let n = read_full(&mut file, &mut head)?;
    head.truncate(n);

    let Some(mut format) = detect(&head) else {
        return Ok(MediaInfo {
            kind: Kind::File,
            format: None,
            mime: infer::get(&head).map_or(OCTET_STREAM, |t| t.mime_type()),
            dimensions: None,
            duration: None,
            thumbnail: None,
        });
    };

    let mut dimensions = None;
    let mut duration = None;
    let mut thumbnail = None;
    match format.kind() {
        Kind::Image => {
            dimensions = image_dimensions(path);
            if let Some(thumb) = dimensions.and_then(|dims| make_thumbnail(path, format, len, dims))
            {
                dimensions = Some(thumb.dimensions);
                thumbnail = thumb.jpeg;
            }
        }
        _ => match format {
            Format::Wav => duration = wav_duration(&mut file, len).ok().flatten(),
            Format::Flac => duration = flac_duration(&head),
            Format::Mp4 | Format::M4a | Format::Mov => {
                if let Ok(info) = mp4_info(&mut file, len) {
                    duration = info.duration;
                    if format == Format::Mp4 && info.has_audio && !info.has_video {
                        format = Format::M4a;
                    }
                }
            }
            _ => {}
        },
    }
    Ok(MediaInfo {
        kind: format.kind(),
        format: Some(format),
        mime: format.mime(),
        dimensions,
        duration,
        thumbnail,
    })
}

/// The media format of content starting with `head`, from magic numbers (`None`: not a format
/// we know). Give it at least the first [`SNIFF_LEN`] bytes, or the whole file if shorter.
pub fn detect(head: &[u8]) -> Option<Format> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);

    if at(0, b"\x89PNG\r\n\x1a\n") {
        return Some(Format::Png);
    }
    if at(0, &[0xFF, 0xD8, 0xFF]) {
        return Some(Format::Jpeg);
    }
    if at(0, b"GIF87a") || at(0, b"GIF89a") {
        return Some(Format::Gif);
    }
    if at(0, b"RIFF") {
        if at(8, b"WEBP") {
            return Some(Format::Webp);
        }
        if at(8, b"WAVE") {
            return Some(Format::Wav);
        }
        if at(8, b"AVI ") {
            return Some(Format::Avi);
        }
        return None;
    }
    if at(0, b"BM") && is_bmp(head) {
        return Some(Format::Bmp);
    }
    if at(0, b"fLaC") {
        return Some(Format::Flac);
    }
    if at(0, b"OggS") {
        // The first page holds the first stream's header packet; 27 header bytes and a one-byte
        // segment table precede it.
        if at(28, b"\x80theora") {
            return Some(Format::OggVideo);
        }
        return Some(Format::Ogg);
    }
    if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        // EBML: the DocType element (0x4282, then a one-byte size) says which flavour.
        if find(head, b"\x42\x82\x84webm").is_some() {
            return Some(Format::Webm);
        }
        return Some(Format::Matroska);
    }
    if at(4, b"ftyp") {
        return ftyp_format(head);
    }
    if (at(0, b"ID3") && head.get(3).is_some_and(|&v| v < 0xFF)) || is_mp3_frame(head) {
        return Some(Format::Mp3);
    }
    None
}

/// A BMP file header is followed by a DIB header whose size names its version.
fn is_bmp(head: &[u8]) -> bool {
    let Some(dib) = head.get(14..18) else {
        return false;
    };
    let dib_size = u32::from_le_bytes(dib.try_into().unwrap_or_default());
    matches!(dib_size, 12 | 16 | 40 | 52 | 56 | 64 | 108 | 124)
}

/// An MPEG audio layer III frame header: 11 sync bits, a valid version, layer III, a valid
/// bitrate and sample rate (ADTS AAC shares the sync bits but says layer 0).
fn is_mp3_frame(head: &[u8]) -> bool {
    let [0xFF, b1, b2, ..] = *head else {
        return false;
    };
    let sync = b1 & 0xE0 == 0xE0;
    let version_ok = (b1 >> 3) & 0b11 != 0b01;
    let layer_iii = (b1 >> 1) & 0b11 == 0b01;
    let bitrate_ok = b2 >> 4 != 0b1111;
    let rate_ok = (b2 >> 2) & 0b11 != 0b11;
    sync && version_ok && layer_iii && bitrate_ok && rate_ok
}

/// Brands of audio-only MPEG-4 files.
const AUDIO_BRANDS: &[&[u8; 4]] = &[b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "];
/// Brands of HEIF/AVIF images, which share the `ftyp` box: not video.
const IMAGE_BRANDS: &[&[u8; 4]] = &[
    b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis",
];
/// Brands of MPEG-4 and 3GP video (an ISO brand may still hold only sound: [`probe`] looks at
/// the tracks).
const VIDEO_BRANDS: &[&[u8; 4]] = &[
    b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"iso7", b"iso8", b"iso9", b"mp41",
    b"mp42", b"mp71", b"avc1", b"M4V ", b"M4VH", b"M4VP", b"3gp4", b"3gp5", b"3gp6", b"3gp7",
    b"3gg6", b"3g2a", b"3g2b", b"3g2c", b"dash", b"mmp4", b"MSNV", b"f4v ", b"F4V ", b"F4P ",
    b"XAVC",
];

/// The format of a file starting with an `ftyp` box, from its major brand, else its compatible
/// brands.
fn ftyp_format(head: &[u8]) -> Option<Format> {
    let box_size = u32::from_be_bytes(head.get(..4)?.try_into().ok()?) as usize;
    let major: &[u8; 4] = head.get(8..12)?.try_into().ok()?;
    let brand = |b: &[u8; 4]| -> Option<Format> {
        if b == b"qt  " {
            Some(Format::Mov)
        } else if AUDIO_BRANDS.contains(&b) {
            Some(Format::M4a)
        } else if VIDEO_BRANDS.contains(&b) {
            Some(Format::Mp4)
        } else {
            None
        }
    };
    if IMAGE_BRANDS.contains(&major) {
        return None;
    }
    if let Some(format) = brand(major) {
        return Some(format);
    }
    // Compatible brands follow the minor version, up to the end of the box.
    let end = box_size.min(head.len());
    head.get(16..end)?
        .chunks_exact(4)
        .filter_map(|b| b.try_into().ok())
        .find_map(brand)
}

/// Position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Width and height from the image header alone.
fn image_dimensions(path: &Path) -> Option<(u32, u32)> {
    let size = imagesize::reader_size(BufReader::new(File::open(path).ok()?)).ok()?;
    Some((
        u32::try_from(size.width).ok()?,
        u32::try_from(size.height).ok()?,
    ))
}

/// A thumbnail attempt: the image's displayed dimensions and the JPEG, if one fit.
struct Thumbnail {
    dimensions: (u32, u32),
    jpeg: Option<Vec<u8>>,
}

/// Decodes the image within the limits and makes its thumbnail; `None` if the image is over a
/// limit or cannot be decoded.
fn make_thumbnail(path: &Path, format: Format, len: u64, dims: (u32, u32)) -> Option<Thumbnail> {
    let decoder_format = format.thumbnail_decoder()?;
    if len > MAX_THUMBNAIL_SOURCE_BYTES || pixels(dims) > MAX_THUMBNAIL_SOURCE_PIXELS {
        return None;
    }
    let mut reader = ImageReader::new(BufReader::new(File::open(path).ok()?));
    reader.set_format(decoder_format);
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_THUMBNAIL_DECODE_ALLOC);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().ok()?;
    // The decoder's own reading of the header is what it will allocate for: check it too.
    if pixels(decoder.dimensions()) > MAX_THUMBNAIL_SOURCE_PIXELS {
        return None;
    }
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).ok()?;
    image.apply_orientation(orientation);
    Some(Thumbnail {
        dimensions: (image.width(), image.height()),
        jpeg: encode_thumbnail(&image),
    })
}

/// Width × height, without overflow.
fn pixels((width, height): (u32, u32)) -> u64 {
    u64::from(width) * u64::from(height)
}

/// Sides tried, largest first, until the JPEG fits [`MAX_THUMBNAIL_BYTES`].
const THUMBNAIL_SIDES: [u32; 4] = [
    THUMBNAIL_SIDE,
    THUMBNAIL_SIDE * 3 / 4,
    THUMBNAIL_SIDE / 2,
    96,
];
/// JPEG qualities tried at each side, best first.
const THUMBNAIL_QUALITIES: [u8; 3] = [70, 55, 40];

/// The image shrunk to fit each of [`THUMBNAIL_SIDES`] in turn and encoded at each of
/// [`THUMBNAIL_QUALITIES`] until it fits [`MAX_THUMBNAIL_BYTES`]; `None` if nothing fits.
fn encode_thumbnail(image: &DynamicImage) -> Option<Vec<u8>> {
    // Flatten once at the largest size; smaller sizes are cheap resizes of that.
    let first = flatten(&resize_to_fit(image, THUMBNAIL_SIDES[0]));
    let first = DynamicImage::ImageRgb8(first);
    for side in THUMBNAIL_SIDES {
        let rgb = resize_to_fit(&first, side).into_rgb8();
        for quality in THUMBNAIL_QUALITIES {
            let mut jpeg = Vec::new();
            JpegEncoder::new_with_quality(&mut jpeg, quality)
                .encode_image(&rgb)
                .ok()?;
            if jpeg.len() <= MAX_THUMBNAIL_BYTES {
                return Some(jpeg);
            }
        }
    }
    None
}

/// The image scaled down (never up) to fit in a `side`×`side` square, keeping its aspect ratio.
fn resize_to_fit(image: &DynamicImage, side: u32) -> DynamicImage {
    let (w, h) = (image.width(), image.height());
    let longest = w.max(h);
    if longest <= side {
        return image.clone();
    }
    let scale = |x: u32| {
        ((u64::from(x) * u64::from(side) + u64::from(longest) / 2) / u64::from(longest)).max(1)
            as u32
    };
    image.thumbnail_exact(scale(w), scale(h))
}

/// RGB for JPEG: transparent pixels are composited onto white (not the black that dropping the
/// alpha channel would show).
fn flatten(image: &DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.to_rgb8();
    }
    let rgba = image.to_rgba8();
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let over_white =
            |c: u8| ((u16::from(c) * u16::from(a) + 255 * (255 - u16::from(a)) + 127) / 255) as u8;
        image::Rgb([over_white(r), over_white(g), over_white(b)])
    })
}

/// Duration of a WAV file: the `data` chunk's length over the `fmt ` chunk's byte rate.
fn wav_duration(file: &mut File, len: u64) -> io::Result<Option<Duration>> {
    let mut pos = 12; // "RIFF", size, "WAVE"
    let mut byte_rate = None;
    let mut data_len = None;
    for _ in 0..MAX_BOXES {
        if pos + 8 > len {
            break;
        }
        let mut header = [0u8; 8];
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut header)?;
        let size = u64::from(u32::from_le_bytes([
            header[4], header[5], header[6], header[7],
        ]));
        let body = pos + 8;
        match &header[..4] {
            b"fmt " if size >= 16 => {
                let mut fmt = [0u8; 16];
                file.read_exact(&mut fmt)?;
                byte_rate = Some(u32::from_le_bytes([fmt[8], fmt[9], fmt[10], fmt[11]]));
            }
            b"data" => {
                let available = len.saturating_sub(body);
                // A streaming writer may leave the size at 0 or 0xFFFFFFFF: the data runs to the
                // end. A file cut short has only what is there.
                data_len = Some(if size == 0 || size == u64::from(u32::MAX) {
                    available
                } else {
                    size.min(available)
                });
            }
            _ => {}
        }
        if let (Some(rate), Some(data)) = (byte_rate, data_len) {
            if rate == 0 {
                return Ok(None);
            }
            return Ok(Some(duration_of(data, u64::from(rate))));
        }
        pos = body + size + (size & 1);
    }
    Ok(None)
}

/// Duration of a FLAC stream from its `STREAMINFO` block (sample rate and total samples).
fn flac_duration(head: &[u8]) -> Option<Duration> {
    // "fLaC", then the first metadata block header (type 0 = STREAMINFO, 34 bytes), then
    // min/max block size (2 + 2), min/max frame size (3 + 3), then 20 bits of sample rate,
    // 3 of channels, 5 of bits per sample and 36 of total samples.
    if head.get(4)? & 0x7F != 0 {
        return None;
    }
    let info = head.get(18..26)?;
    let rate = (u32::from(info[0]) << 12) | (u32::from(info[1]) << 4) | (u32::from(info[2]) >> 4);
    let samples = (u64::from(info[3] & 0x0F) << 32)
        | u64::from(u32::from_be_bytes([info[4], info[5], info[6], info[7]]));
    if rate == 0 || samples == 0 {
        return None;
    }
    Some(duration_of(samples, u64::from(rate)))
}

/// `units / per_second` seconds, to the millisecond.
fn duration_of(units: u64, per_second: u64) -> Duration {
    let millis = u128::from(units) * 1000 / u128::from(per_second);
    Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}

/// What the `moov` box of an MP4/MOV says.
#[derive(Debug, Default)]
struct Mp4Info {
    duration: Option<Duration>,
    has_video: bool,
    has_audio: bool,
}

/// An ISO BMFF box: its type and where its body starts and ends.
struct BoxHeader {
    kind: [u8; 4],
    body: u64,
    end: u64,
}

/// Reads the box at `pos`, which must end by `limit`; `None` at the end or if malformed.
fn read_box(file: &mut File, pos: u64, limit: u64) -> io::Result<Option<BoxHeader>> {
    if pos + 8 > limit {
        return Ok(None);
    }
    let mut header = [0u8; 8];
    file.seek(SeekFrom::Start(pos))?;
    file.read_exact(&mut header)?;
    let size32 = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let kind = [header[4], header[5], header[6], header[7]];
    let (body, end) = match size32 {
        0 => (pos + 8, limit),
        1 => {
            let mut large = [0u8; 8];
            file.read_exact(&mut large)?;
            (pos + 16, pos.saturating_add(u64::from_be_bytes(large)))
        }
        n => (pos + 8, pos + u64::from(n)),
    };
    if end < body || end > limit {
        return Ok(None);
    }
    Ok(Some(BoxHeader { kind, body, end }))
}

/// Finds the first box of type `kind` among the boxes in `start..end`.
fn find_box(
    file: &mut File,
    kind: &[u8; 4],
    start: u64,
    end: u64,
) -> io::Result<Option<BoxHeader>> {
    let mut pos = start;
    for _ in 0..MAX_BOXES {
        let Some(header) = read_box(file, pos, end)? else {
            return Ok(None);
        };
        if &header.kind == kind {
            return Ok(Some(header));
        }
        pos = header.end;
    }
    Ok(None)
}

/// Reads `moov`: the movie duration from `mvhd` and which kinds of track (`hdlr`) it has.
/// `moov` may come after the media data; the parser seeks over boxes, reading only headers.
fn mp4_info(file: &mut File, len: u64) -> io::Result<Mp4Info> {
    let mut info = Mp4Info::default();
    let Some(moov) = find_box(file, b"moov", 0, len)? else {
        return Ok(info);
    };
    let mut pos = moov.body;
    for _ in 0..MAX_BOXES {
        let Some(child) = read_box(file, pos, moov.end)? else {
            break;
        };
        match &child.kind {
            b"mvhd" => info.duration = read_mvhd(file, child.body)?,
            b"trak" => {
                if let Some(mdia) = find_box(file, b"mdia", child.body, child.end)?
                    && let Some(hdlr) = find_box(file, b"hdlr", mdia.body, mdia.end)?
                {
                    // version/flags (4), pre_defined (4), handler type (4).
                    let mut handler = [0u8; 12];
                    file.seek(SeekFrom::Start(hdlr.body))?;
                    file.read_exact(&mut handler)?;
                    match &handler[8..] {
                        b"vide" => info.has_video = true,
                        b"soun" => info.has_audio = true,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        pos = child.end;
    }
    Ok(info)
}

/// The duration in an `mvhd` body (version 0: 32-bit times, version 1: 64-bit).
fn read_mvhd(file: &mut File, body: u64) -> io::Result<Option<Duration>> {
    let mut buf = [0u8; 32];
    file.seek(SeekFrom::Start(body))?;
    file.read_exact(&mut buf[..20])?;
    let (timescale, duration) = if buf[0] == 1 {
        file.read_exact(&mut buf[20..32])?;
        let timescale = u32::from_be_bytes([buf[20], buf[21], buf[22], buf[23]]);
        let duration = u64::from_be_bytes(buf[24..32].try_into().unwrap_or_default());
        (timescale, Some(duration).filter(|&d| d != u64::MAX))
    } else {
        let timescale = u32::from_be_bytes([buf[12], buf[13], buf[14], buf[15]]);
        let duration = u32::from_be_bytes([buf[16], buf[17], buf[18], buf[19]]);
        (
            timescale,
            Some(u64::from(duration)).filter(|&d| d != u64::from(u32::MAX)),
        )
    };
    Ok(duration
        .filter(|_| timescale != 0)
        .map(|d| duration_of(d, u64::from(timescale))))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::PathBuf;

    use image::{ImageEncoder, Rgb, Rgba, RgbaImage};

    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        File::create(&path).unwrap().write_all(bytes).unwrap();
        path
    }

    /// A smooth gradient with some detail: compresses like a photo, not like noise.
    fn picture(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            Rgb([
                (x * 255 / width) as u8,
                (y * 255 / height) as u8,
                (((x / 16 + y / 16) % 2) * 200) as u8,
            ])
        })
    }

    fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = io::Cursor::new(Vec::new());
        image.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn decode_jpeg(bytes: &[u8]) -> DynamicImage {
        image::load_from_memory_with_format(bytes, ImageFormat::Jpeg).unwrap()
    }

    fn assert_thumbnail(info: &MediaInfo, expected: (u32, u32)) {
        let thumb = info.thumbnail.as_ref().expect("a thumbnail");
        assert!(thumb.len() <= MAX_THUMBNAIL_BYTES, "{} bytes", thumb.len());
        let decoded = decode_jpeg(thumb);
        assert_eq!((decoded.width(), decoded.height()), expected);
    }

    #[test]
    fn png_named_bin_is_an_image_with_dimensions_and_thumbnail() {
        let dir = tempfile::tempdir().unwrap();
        let png = encode(
            &DynamicImage::ImageRgb8(picture(640, 480)),
            ImageFormat::Png,
        );
        let path = write(dir.path(), "x.bin", &png);

        let info = probe(&path).unwrap();
        assert_eq!(info.kind, Kind::Image);
        assert_eq!(info.format, Some(Format::Png));
        assert_eq!(info.mime, "image/png");
        assert_eq!(info.dimensions, Some((640, 480)));
        assert_eq!(info.duration, None);
        assert_thumbnail(&info, (256, 192));
    }

    #[test]
    fn jpeg_named_bin_is_an_image_with_dimensions_and_thumbnail() {
        let dir = tempfile::tempdir().unwrap();
        let mut jpeg = Vec::new();
        JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&picture(1000, 300))
            .unwrap();
        let path = write(dir.path(), "x.bin", &jpeg);

        let info = probe(&path).unwrap();
        assert_eq!(info.kind, Kind::Image);
        assert_eq!(info.format, Some(Format::Jpeg));
        assert_eq!(info.mime, "image/jpeg");
        assert_eq!(info.dimensions, Some((1000, 300)));
        assert_thumbnail(&info, (256, 77));
    }

    #[test]
    fn gif_and_webp_get_thumbnails() {
        let dir = tempfile::tempdir().unwrap();
        let image = DynamicImage::ImageRgba8(DynamicImage::ImageRgb8(picture(300, 600)).to_rgba8());
        for (format, expected) in [
            (ImageFormat::Gif, Format::Gif),
            (ImageFormat::WebP, Format::Webp),
        ] {
            let path = write(dir.path(), "x.bin", &encode(&image, format));
            let info = probe(&path).unwrap();
            assert_eq!(info.format, Some(expected));
            assert_eq!(info.dimensions, Some((300, 600)));
            assert_thumbnail(&info, (128, 256));
        }
    }

    #[test]
    fn transparent_png_is_flattened_onto_white_and_small_images_are_not_enlarged() {
        let dir = tempfile::tempdir().unwrap();
        let clear = RgbaImage::from_pixel(100, 50, Rgba([0, 0, 0, 0]));
        let path = write(
            dir.path(),
            "x",
            &encode(&DynamicImage::ImageRgba8(clear), ImageFormat::Png),
        );
        let info = probe(&path).unwrap();
        assert_thumbnail(&info, (100, 50));
        let thumb = decode_jpeg(info.thumbnail.as_ref().unwrap()).to_rgb8();
        assert!(
            thumb.get_pixel(50, 25).0.iter().all(|&c| c > 240),
            "white, not black"
        );
    }

    #[test]
    fn noisy_image_thumbnail_never_exceeds_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let mut noise = vec![0u8; 1024 * 1024 * 3];
        blake3::Hasher::new()
            .update(b"noise")
            .finalize_xof()
            .fill(&mut noise);
        let image = RgbImage::from_raw(1024, 1024, noise).unwrap();
        let path = write(
            dir.path(),
            "noise",
            &encode(&DynamicImage::ImageRgb8(image), ImageFormat::Png),
        );
        let info = probe(&path).unwrap();
        assert_eq!(info.dimensions, Some((1024, 1024)));
        // Pure noise needs the smaller sizes or qualities; whatever comes out fits.
        if let Some(thumb) = &info.thumbnail {
            assert!(thumb.len() <= MAX_THUMBNAIL_BYTES);
            decode_jpeg(thumb);
        }
    }

    #[test]
    fn decompression_bomb_gets_dimensions_but_is_not_decoded() {
        // A PNG header declaring 100 000 × 100 000 pixels (10 gigapixels) in 40 bytes.
        let dir = tempfile::tempdir().unwrap();
        let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
        png.extend_from_slice(&100_000u32.to_be_bytes());
        png.extend_from_slice(&100_000u32.to_be_bytes());
        png.extend_from_slice(&[8, 2, 0, 0, 0]);
        png.extend_from_slice(&[0; 4]); // CRC (never checked: we do not decode)
        let path = write(dir.path(), "bomb.bin", &png);
        let info = probe(&path).unwrap();
        assert_eq!(info.kind, Kind::Image);
        assert_eq!(info.dimensions, Some((100_000, 100_000)));
        assert_eq!(info.thumbnail, None);

        // And a real image just over the pixel limit is refused before decoding too.
        let big = write(dir.path(), "big", &png_header(8000, 5001));
        assert_eq!(probe(&big).unwrap().thumbnail, None);
    }

    fn png_header(width: u32, height: u32) -> Vec<u8> {
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(&[0], 1, 1, image::ExtendedColorType::L8)
            .unwrap();
        // Rewrite the IHDR dimensions: the pixel check happens before any decoding.
        png[16..20].copy_from_slice(&width.to_be_bytes());
        png[20..24].copy_from_slice(&height.to_be_bytes());
        png
    }

    #[test]
    fn bmp_is_an_image_with_dimensions_but_no_thumbnail_decoder() {
        let mut bmp = b"BM".to_vec();
        bmp.extend_from_slice(&[0; 12]);
        bmp.extend_from_slice(&40u32.to_le_bytes());
        bmp.extend_from_slice(&320i32.to_le_bytes());
        bmp.extend_from_slice(&200i32.to_le_bytes());
        bmp.extend_from_slice(&[1, 0, 24, 0]);
        bmp.extend_from_slice(&[0; 24]);
        let dir = tempfile::tempdir().unwrap();
        let info = probe(&write(dir.path(), "x", &bmp)).unwrap();
        assert_eq!(info.kind, Kind::Image);
        assert_eq!(info.mime, "image/bmp");
        assert_eq!(info.dimensions, Some((320, 200)));
        assert_eq!(info.thumbnail, None);
    }

    /// A PCM WAV file with an extra chunk before `data`.
    fn wav(sample_rate: u32, channels: u16, seconds: u32) -> Vec<u8> {
        let block_align = channels * 2;
        let byte_rate = sample_rate * u32::from(block_align);
        let data_len = byte_rate * seconds;
        let mut out = b"RIFF".to_vec();
        out.extend_from_slice(&(4 + 24 + 12 + 8 + data_len).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes()); // PCM
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&sample_rate.to_le_bytes());
        out.extend_from_slice(&byte_rate.to_le_bytes());
        out.extend_from_slice(&block_align.to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"LIST");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(b"abc\0"); // odd size, padded
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data_len.to_le_bytes());
        out.resize(out.len() + data_len as usize, 0);
        out
    }

    #[test]
    fn wav_is_audio_with_duration() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "x.png", &wav(8000, 2, 3));
        let info = probe(&path).unwrap();
        assert_eq!(info.kind, Kind::Audio);
        assert_eq!(info.format, Some(Format::Wav));
        assert_eq!(info.mime, "audio/wav");
        assert_eq!(info.duration, Some(Duration::from_secs(3)));
        assert_eq!((info.dimensions, info.thumbnail), (None, None));

        // Truncated data (a half-received or streamed file): the duration of what is there.
        let mut short = wav(8000, 1, 2);
        short.truncate(short.len() - 16_000); // 16 000 bytes a second
        let info = probe(&write(dir.path(), "short", &short)).unwrap();
        assert_eq!(info.duration, Some(Duration::from_secs(1)));
    }

    #[test]
    fn flac_duration_comes_from_streaminfo() {
        let mut flac = b"fLaC".to_vec();
        flac.extend_from_slice(&[0x80, 0, 0, 34]); // last block, STREAMINFO, 34 bytes
        flac.extend_from_slice(&[0x10, 0, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        let rate: u64 = 48_000;
        let samples: u64 = rate * 5 + rate / 2;
        // 20 bits rate, 3 bits channels-1 (1), 5 bits bps-1 (15), 36 bits samples.
        let packed = (rate << 44) | (1 << 41) | (15 << 36) | samples;
        flac.extend_from_slice(&packed.to_be_bytes());
        flac.extend_from_slice(&[0; 16]); // MD5
        let dir = tempfile::tempdir().unwrap();
        let info = probe(&write(dir.path(), "x", &flac)).unwrap();
        assert_eq!(info.kind, Kind::Audio);
        assert_eq!(info.mime, "audio/flac");
        assert_eq!(info.duration, Some(Duration::from_millis(5500)));
    }

    /// An MP4 box.
    fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    fn mvhd_v0(timescale: u32, duration: u32) -> Vec<u8> {
        let mut body = vec![0u8; 100];
        body[12..16].copy_from_slice(&timescale.to_be_bytes());
        body[16..20].copy_from_slice(&duration.to_be_bytes());
        bx(b"mvhd", &body)
    }

    fn trak(handler: &[u8; 4]) -> Vec<u8> {
        let mut hdlr = vec![0u8; 8];
        hdlr.extend_from_slice(handler);
        hdlr.extend_from_slice(&[0; 13]);
        bx(
            b"trak",
            &bx(
                b"mdia",
                &[bx(b"mdhd", &[0; 24]), bx(b"hdlr", &hdlr)].concat(),
            ),
        )
    }

    fn mp4(brand: &[u8; 4], handlers: &[&[u8; 4]], moov_last: bool) -> Vec<u8> {
        let ftyp = bx(b"ftyp", &[&brand[..], &[0, 0, 2, 0], b"isommp41"].concat());
        let mut moov_body = mvhd_v0(600, 600 * 90 + 300);
        for h in handlers {
            moov_body.extend(trak(h));
        }
        let moov = bx(b"moov", &moov_body);
        let mdat = bx(b"mdat", &[0xAB; 5000]);
        if moov_last {
            [ftyp, mdat, moov].concat()
        } else {
            [ftyp, moov, mdat].concat()
        }
    }

    #[test]
    fn mp4_video_and_audio_only_mp4_and_m4a() {
        let dir = tempfile::tempdir().unwrap();
        let video = probe(&write(
            dir.path(),
            "a",
            &mp4(b"isom", &[b"vide", b"soun"], true),
        ))
        .unwrap();
        assert_eq!(video.kind, Kind::Video);
        assert_eq!(video.mime, "video/mp4");
        assert_eq!(video.duration, Some(Duration::from_millis(90_500)));

        // An ISO brand but only a sound track: audio.
        let audio = probe(&write(dir.path(), "b", &mp4(b"isom", &[b"soun"], false))).unwrap();
        assert_eq!(audio.kind, Kind::Audio);
        assert_eq!(audio.format, Some(Format::M4a));
        assert_eq!(audio.mime, "audio/mp4");
        assert_eq!(audio.duration, Some(Duration::from_millis(90_500)));

        let m4a = probe(&write(dir.path(), "c", &mp4(b"M4A ", &[b"soun"], false))).unwrap();
        assert_eq!((m4a.kind, m4a.format), (Kind::Audio, Some(Format::M4a)));

        let mov = probe(&write(dir.path(), "d", &mp4(b"qt  ", &[b"vide"], false))).unwrap();
        assert_eq!((mov.kind, mov.mime), (Kind::Video, "video/quicktime"));
        assert_eq!(mov.duration, Some(Duration::from_millis(90_500)));

        // HEIF shares the ftyp box but is no video.
        let heic = probe(&write(dir.path(), "e", &mp4(b"heic", &[], false))).unwrap();
        assert_eq!(heic.kind, Kind::File);
    }

    #[test]
    fn mvhd_version_1() {
        let mut body = vec![1u8, 0, 0, 0];
        body.extend_from_slice(&[0; 16]); // creation, modification
        body.extend_from_slice(&1000u32.to_be_bytes());
        body.extend_from_slice(&(3_600_000u64 * 5).to_be_bytes());
        body.extend_from_slice(&[0; 80]);
        let file = [
            bx(b"ftyp", b"mp42\0\0\0\0mp42"),
            bx(b"moov", &[bx(b"mvhd", &body), trak(b"vide")].concat()),
        ]
        .concat();
        let dir = tempfile::tempdir().unwrap();
        let info = probe(&write(dir.path(), "x", &file)).unwrap();
        assert_eq!(info.duration, Some(Duration::from_secs(5 * 3600)));
    }

    #[test]
    fn magic_numbers_of_other_formats() {
        let mut ebml = vec![0x1A, 0x45, 0xDF, 0xA3, 0x9F, 0x42, 0x86, 0x81, 0x01];
        ebml.extend_from_slice(b"\x42\x82\x84webm");
        assert_eq!(detect(&ebml), Some(Format::Webm));
        let mut mkv = vec![0x1A, 0x45, 0xDF, 0xA3, 0xA3, 0x42, 0x86, 0x81, 0x01];
        mkv.extend_from_slice(b"\x42\x82\x88matroska");
        assert_eq!(detect(&mkv), Some(Format::Matroska));
        assert_eq!(detect(b"RIFF\0\0\0\0AVI LIST"), Some(Format::Avi));
        assert_eq!(detect(b"RIFF\0\0\0\0WEBPVP8 "), Some(Format::Webp));
        assert_eq!(detect(b"RIFF\0\0\0\0CDXA"), None);
        assert_eq!(detect(b"ID3\x04\0\0\0\0\0\0"), Some(Format::Mp3));
        assert_eq!(detect(&[0xFF, 0xFB, 0x90, 0x64]), Some(Format::Mp3));
        assert_eq!(
            detect(&[0xFF, 0xF1, 0x50, 0x80]),
            None,
            "ADTS AAC is not MP3"
        );
        let mut ogg = b"OggS".to_vec();
        ogg.resize(28, 0);
        assert_eq!(
            detect(&[&ogg[..], b"\x01vorbis"].concat()),
            Some(Format::Ogg)
        );
        assert_eq!(
            detect(&[&ogg[..], b"\x80theora"].concat()),
            Some(Format::OggVideo)
        );
        assert_eq!(detect(b"GIF89a\x01\0\x01\0"), Some(Format::Gif));
        assert_eq!(
            detect(b"BM\0\0\0\0\0\0\0\0\0\0\0\0hello"),
            None,
            "BM then no DIB header"
        );
        assert_eq!(detect(b""), None);
        for format in [Format::Webm, Format::Avi, Format::OggVideo, Format::Mp4] {
            assert_eq!(format.kind(), Kind::Video);
        }
    }

    #[test]
    fn random_bytes_are_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = vec![0u8; 10_000];
        blake3::Hasher::new()
            .update(b"random")
            .finalize_xof()
            .fill(&mut bytes);
        let info = probe(&write(dir.path(), "photo.jpg", &bytes)).unwrap();
        assert_eq!(
            info,
            MediaInfo {
                kind: Kind::File,
                format: None,
                mime: OCTET_STREAM,
                dimensions: None,
                duration: None,
                thumbnail: None,
            }
        );

        // Other known types keep a useful MIME type.
        let pdf = probe(&write(dir.path(), "x", b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n")).unwrap();
        assert_eq!((pdf.kind, pdf.mime), (Kind::File, "application/pdf"));
        let empty = probe(&write(dir.path(), "empty.png", b"")).unwrap();
        assert_eq!((empty.kind, empty.mime), (Kind::File, OCTET_STREAM));
    }
}
