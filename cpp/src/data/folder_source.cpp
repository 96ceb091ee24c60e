// folder_source: an ImageNet-style folder, root/<class>/<image>, as torchvision's ImageFolder sees
// it (classes by sorted folder name). The file list is built once in the constructor and never
// changes, so load() and describe() are safe to call from many workers at once.
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <functional>
#include <system_error>
#include <vector>

#include "convnet/error.h"  // first: data.h uses std::runtime_error without <stdexcept>
#include "convnet/data.h"
#include "data/image_window.h"
#include "data/window_source.h"

namespace convnet {
namespace {

namespace fs = std::filesystem;

bool is_image_name(const std::string& name) {
  const auto dot = name.rfind('.');
  if (dot == std::string::npos) return false;
  std::string ext = name.substr(dot + 1);
  for (char& c : ext) c = char(std::tolower(static_cast<unsigned char>(c)));
  return ext == "jpg" || ext == "jpeg" || ext == "png";
}

// Hidden entries are skipped: ".ipynb_checkpoints" is not a class, and macOS "._x.JPEG"
// AppleDouble files are not images.
bool hidden(const std::string& name) { return !name.empty() && name[0] == '.'; }

// Calls f(entry) for each entry of dir, turning any filesystem error (permissions, a folder
// removed while listed) into a ValueError naming the folder.
void list_folder(const fs::path& dir, const std::function<void(const fs::directory_entry&)>& f) {
  std::error_code ec;
  fs::directory_iterator it(dir, ec), end;
  for (; !ec && it != end; it.increment(ec)) f(*it);
  CONVNET_CHECK(!ec, "folder_source: cannot list '", dir.string(), "': ", ec.message());
}

class FolderSource final : public WindowSource {
 public:
  // `train_classes` empty: the classes are this folder's, by sorted name. Else they are those,
  // and each of this folder's class folders takes the label of the training class of its name.
  FolderSource(const std::string& root, int size, const std::vector<std::string>& train_classes)
      : root_(root), size_(size) {
    CONVNET_CHECK(size >= 1 && size <= kMaxSourceSide, "folder_source: size must be >= 1 and <= ",
                  kMaxSourceSide, ", got ", size);
    std::error_code ec;
    CONVNET_CHECK(fs::is_directory(root_, ec), "folder_source: '", root,
                  "' does not exist or is not a folder");
    list_folder(root_, [&](const fs::directory_entry& entry) {
      const std::string name = entry.path().filename().string();
      std::error_code e2;  // is_directory follows symlinks; a dangling one is just not a folder
      if (!hidden(name) && entry.is_directory(e2)) classes_.push_back(name);
    });
    CONVNET_CHECK(!classes_.empty(), "folder_source: '", root,
                  "' has no class folders (expected root/<class>/<image>.jpg)");
    std::sort(classes_.begin(), classes_.end());
    // Matched by name, not by position: a test folder lacking a class (or with one renamed)
    // must not shift the labels of every class after it.
    for (const std::string& name : classes_) {
      if (train_classes.empty()) {
        label_of_.push_back(int(label_of_.size()));
        continue;
      }
      const auto it = std::find(train_classes.begin(), train_classes.end(), name);
      CONVNET_CHECK(it != train_classes.end(), "folder_source: class folder '",
                    (root_ / name).string(), "' has no counterpart among the ",
                    train_classes.size(), " training classes (", class_list(train_classes),
                    "); its images would have no label. Rename or remove it");
      label_of_.push_back(int(it - train_classes.begin()));
    }
    folders_ = classes_;
    if (!train_classes.empty()) classes_ = train_classes;

    // Paths are kept as the file names only, one after another in one string (ImageNet's 1.28M
    // full paths would cost ~100 MB as separate strings); class_start_ maps an index to its class.
    std::vector<std::string> files;
    for (size_t c = 0; c < folders_.size(); ++c) {
      const fs::path dir = root_ / folders_[c];
      files.clear();
      list_folder(dir, [&](const fs::directory_entry& entry) {
        const std::string name = entry.path().filename().string();
        std::error_code e2;
        if (!hidden(name) && is_image_name(name) && entry.is_regular_file(e2))
          files.push_back(name);
      });
      CONVNET_CHECK(!files.empty(), "folder_source: class folder '", dir.string(),
                    "' has no images (.jpg, .jpeg or .png)");
      std::sort(files.begin(), files.end());
      class_start_.push_back(int64_t(name_start_.size()));
      for (const auto& f : files) {
        name_start_.push_back(names_.size());
        names_ += f;
      }
    }
    name_start_.push_back(names_.size());
  }

  int64_t size() const override { return int64_t(name_start_.size()) - 1; }
  int channels() const override { return 3; }
  int height() const override { return size_; }
  int width() const override { return size_; }
  int classes() const override { return int(classes_.size()); }
  std::vector<std::string> class_names() const override { return classes_; }

  std::string describe(int64_t index) const override { return path(index).string(); }

  int load(int64_t index, float* chw) const override { return load_whole(index, chw); }

  int load_window(int64_t index, const ImageWindow& window, uint8_t* pixels) const override {
    // DataErrors from the decoder already name the file.
    load_image_window(path(index).string(), size_, window, pixels);
    return label_of_[size_t(folder_of(index))];
  }

 private:
  int folder_of(int64_t index) const {
    return int(std::upper_bound(class_start_.begin(), class_start_.end(), index) -
               class_start_.begin()) - 1;
  }

  fs::path path(int64_t index) const {
    CONVNET_CHECK(index >= 0 && index < size(), "folder_source '", root_.string(), "': index ",
                  index, " out of range [0, ", size(), ")");
    const size_t b = name_start_[size_t(index)], e = name_start_[size_t(index) + 1];
    return root_ / folders_[size_t(folder_of(index))] / names_.substr(b, e - b);
  }

  // At most the first 10 names, for messages.
  static std::string class_list(const std::vector<std::string>& names) {
    std::string out;
    for (size_t i = 0; i < names.size() && i < 10; ++i) out += (i ? ", '" : "'") + names[i] + "'";
    return names.size() > 10 ? out + ", ..." : out;
  }

  fs::path root_;
  int size_;
  std::vector<std::string> classes_;  // the label names, in label order
  std::vector<std::string> folders_;  // this folder's class folders, sorted
  std::vector<int> label_of_;         // the label of each of folders_
  std::vector<int64_t> class_start_;  // first example index of each of folders_
  std::string names_;                 // all file names, concatenated
  std::vector<size_t> name_start_;    // offset of each name in names_, plus the end
};

// A list of image files, each of class 0: images to classify (convnet predict).
class FileListSource final : public WindowSource {
 public:
  FileListSource(std::vector<std::string> paths, int size) : paths_(std::move(paths)), size_(size) {
    CONVNET_CHECK(size >= 1 && size <= kMaxSourceSide, "image_files_source: size must be >= 1 and <= ",
                  kMaxSourceSide, ", got ", size);
    CONVNET_CHECK(!paths_.empty(), "image_files_source: no files given");
  }
  int64_t size() const override { return int64_t(paths_.size()); }
  int channels() const override { return 3; }
  int height() const override { return size_; }
  int width() const override { return size_; }
  int classes() const override { return 1; }
  std::string describe(int64_t index) const override { return paths_.at(size_t(index)); }
  int load(int64_t index, float* chw) const override { return load_whole(index, chw); }
  int load_window(int64_t index, const ImageWindow& window, uint8_t* pixels) const override {
    load_image_window(paths_.at(size_t(index)), size_, window, pixels);
    return 0;
  }

 private:
  std::vector<std::string> paths_;
  int size_;
};

}  // namespace

int WindowSource::load_whole(int64_t index, float* chw) const {
  thread_local std::vector<uint8_t> rgbx;
  const size_t plane = size_t(height()) * size_t(width());
  rgbx.resize(4 * plane);
  ImageWindow all;
  all.height = height();
  all.width = width();
  const int label = load_window(index, all, rgbx.data());
  for (size_t i = 0; i < plane; ++i)
    for (size_t c = 0; c < 3; ++c) chw[c * plane + i] = float(rgbx[4 * i + c]);
  return label;
}

std::shared_ptr<DataSource> image_files_source(std::vector<std::string> paths, int size) {
  return std::make_shared<FileListSource>(std::move(paths), size);
}

std::shared_ptr<DataSource> folder_source(const std::string& root, int size) {
  return std::make_shared<FolderSource>(root, size, std::vector<std::string>{});
}

std::shared_ptr<DataSource> folder_source_matching(const std::string& root,
                                                   const std::vector<std::string>& classes,
                                                   int size) {
  CONVNET_CHECK(!classes.empty(), "folder_source_matching: '", root, "': no training classes given");
  return std::make_shared<FolderSource>(root, size, classes);
}

}  // namespace convnet
