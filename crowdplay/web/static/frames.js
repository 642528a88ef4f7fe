// Frame messages (docs/protocol.md): a 16-byte header, then a band of the screen, deflated.
// Mirrors crowdplay/codec.py; shared by the participant page and the dashboard's watch view.

export const HEADER_BYTES = 16;
const BAND_BYTES = 8;
const KIND_FRAME = 1;
export const FLAG_KEYFRAME = 1;
export const FLAG_NEW_EPISODE = 2;
export const FLAG_ROW_MOVES = 4;

async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

// Mirrors crowdplay.codec.FrameDecoder: keyframes replace the screen, deltas move rows then XOR.
export class FrameDecoder {
  constructor(width, height, channels, palette) {
    this.width = width;
    this.height = height;
    this.channels = channels;
    this.rowBytes = width * channels;
    this.screen = new Uint8Array(this.rowBytes * height);
    this.haveKeyframe = false;
    this.palette32 = null;
    if (palette) {
      this.palette32 = new Uint32Array(256);
      for (let i = 0; i < 256; i++) {
        this.palette32[i] = (0xff << 24) | (palette[3 * i + 2] << 16) | (palette[3 * i + 1] << 8) | palette[3 * i];
      }
    }
  }

  async decode(buffer) {
    const view = new DataView(buffer);
    if (buffer.byteLength < HEADER_BYTES || view.getUint8(0) !== KIND_FRAME) throw new Error("not a frame message");
    const header = {
      flags: view.getUint8(1),
      frameId: view.getUint32(2, true),
      envStep: view.getUint32(6, true),
      score: view.getFloat32(10, true),
      inputSeq: view.getUint16(14, true),
    };
    const keyframe = (header.flags & FLAG_KEYFRAME) !== 0;
    if (!keyframe && !this.haveKeyframe) throw new Error("waiting for a keyframe");
    try {
      if (keyframe) this.screen.fill(0);
      if (buffer.byteLength > HEADER_BYTES) await this.apply(buffer, view, header.flags);
      if (keyframe) this.haveKeyframe = true;
    } catch (error) {
      this.haveKeyframe = false; // never paint on top of a screen we could not rebuild
      throw error;
    }
    return header;
  }

  async apply(buffer, view, flags) {
    const first = view.getUint16(HEADER_BYTES, true);
    const rows = view.getUint16(HEADER_BYTES + 2, true);
    const firstCol = view.getUint16(HEADER_BYTES + 4, true);
    const cols = view.getUint16(HEADER_BYTES + 6, true);
    if (first + rows > this.height || firstCol + cols > this.width) throw new Error("frame band outside the screen");
    const body = await inflate(new Uint8Array(buffer, HEADER_BYTES + BAND_BYTES));
    const rb = this.rowBytes;
    if (flags & FLAG_KEYFRAME) {
      if (body.length !== rows * rb) throw new Error("keyframe size mismatch");
      this.screen.set(body, first * rb);
      return;
    }
    let offset = 0;
    if (flags & FLAG_ROW_MOVES) {
      if (body.length < 2 * rows) throw new Error("delta body shorter than its row moves");
      const moves = new DataView(body.buffer, body.byteOffset, 2 * rows);
      const before = this.screen.slice();
      for (let r = 0; r < rows; r++) {
        const source = first + r + moves.getInt16(2 * r, true);
        if (source < 0 || source >= this.height) throw new Error("row move outside the screen");
        this.screen.set(before.subarray(source * rb, (source + 1) * rb), (first + r) * rb);
      }
      offset = 2 * rows;
    }
    if (offset + ((rows + 7) >> 3) > body.length) throw new Error("delta body shorter than its row mask");
    const mask = body.subarray(offset, offset + ((rows + 7) >> 3));
    offset += mask.length;
    const span = cols * this.channels;
    const colOffset = firstCol * this.channels;
    for (let r = 0; r < rows; r++) {
      if (!(mask[r >> 3] & (0x80 >> (r & 7)))) continue;
      if (offset + span > body.length) throw new Error("delta body too short");
      const start = (first + r) * rb + colOffset;
      for (let i = 0; i < span; i++) this.screen[start + i] ^= body[offset + i];
      offset += span;
    }
    if (offset !== body.length) throw new Error("delta body size mismatch");
  }

  paint(imageData) {
    const out = new Uint32Array(imageData.data.buffer);
    const s = this.screen;
    if (this.palette32) {
      for (let i = 0; i < out.length; i++) out[i] = this.palette32[s[i]];
    } else {
      for (let i = 0, j = 0; i < out.length; i++, j += 3) out[i] = (0xff << 24) | (s[j + 2] << 16) | (s[j + 1] << 8) | s[j];
    }
  }
}

/** A hello's screen on ``canvas``: the decoder for its frames, the 2D context and the image to paint into. */
export function screenFor(hello, canvas) {
  const palette = hello.palette ? Uint8Array.from(atob(hello.palette), (c) => c.charCodeAt(0)) : null;
  canvas.width = hello.width;
  canvas.height = hello.height;
  const context = canvas.getContext("2d");
  return { decoder: new FrameDecoder(hello.width, hello.height, hello.channels, palette), context, image: context.createImageData(hello.width, hello.height) };
}
