"""Uploads are saved by the writable source they go to; the saving itself is knowledge/uploads.py."""

from knowledge.uploads import (  # noqa: F401 - the names the UI and the API use
    UPLOAD_TEMP_PREFIX,
    SavedUpload,
    UploadRefused,
    read_blocks,
    remove_stale_uploads,
    sanitize_filename,
    save_upload,
)
